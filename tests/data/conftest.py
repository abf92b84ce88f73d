"""A real single-node Slurm cluster (tests/launch/slurm_cluster.py) for the data stage's Slurm executor."""

from __future__ import annotations

import sys

import pytest
from tests.launch.slurm_cluster import LocalSlurm, why_unavailable


@pytest.fixture(scope="module")
def data_slurm(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        print(f"\nSKIP data Slurm tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot start a local Slurm: {exc}")
    yield cluster
    cluster.stop()
