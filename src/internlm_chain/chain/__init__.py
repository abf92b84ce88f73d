"""Jobs, artifacts, fingerprints, the manifest and the runner that ties stages together."""
