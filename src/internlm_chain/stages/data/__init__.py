"""The `data` stage."""
