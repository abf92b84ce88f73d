"""Fixtures for the agent tests: the agent runtime's interpreter (same rule as tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def agent_python() -> Path:
    override = os.environ.get("ICHAIN_RUNTIME_AGENT")
    if override:
        return Path(override)
    from internlm_chain.runtimes.resolve import env_dir

    python = env_dir("agent") / "bin" / "python"
    if not python.exists():
        pytest.fail(f"runtime 'agent' is not synced ({python} missing): run `ichain env sync agent`")
    return python
