"""Fixtures for the runner tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_helpers import GRAPH, chain_text


@pytest.fixture
def fake_chain(tmp_path):
    def write(stages: dict[str, str] | None = None, extra: str = "") -> Path:
        path = tmp_path / "chain.yaml"
        path.write_text(chain_text(stages or GRAPH, extra), encoding="utf-8")
        return path

    return write
