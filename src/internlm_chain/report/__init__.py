"""`ichain report`: one self-contained HTML page for a chain run."""
