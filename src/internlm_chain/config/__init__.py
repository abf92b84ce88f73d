"""The chain file: YAML → located raw data → validated pydantic models."""
