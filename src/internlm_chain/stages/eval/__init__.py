"""The `eval` stage."""
