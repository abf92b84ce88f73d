"""The `agent` stage."""
