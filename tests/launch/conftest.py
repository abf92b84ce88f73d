"""A real single-node Slurm cluster for the launcher tests, started once per session (or skipped)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurm, why_unavailable  # noqa: E402


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        print(f"\nSKIP Slurm tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:
        print(f"\nSKIP Slurm tests: cannot start a local Slurm: {exc}", file=sys.stderr)
        pytest.skip(f"cannot start a local Slurm: {exc}")
    yield cluster
    cluster.stop()
