"""Chain files for the deploy tests: a tiny model dir and a chain that serves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A directory that looks like a HF model to validation (config.json); not loadable."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    return d
