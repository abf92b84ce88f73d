"""Shared fixtures: golden files, chain files in temp dirs, and stage runtimes for upstream tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/ from current output.")


class Golden:
    """Compare text with tests/golden/<name>; `--update-golden` rewrites the file instead."""

    def __init__(self, update: bool):
        self.update = update

    def check(self, name: str, text: str, replace: dict[str, str] | None = None) -> None:
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        path = GOLDEN / name
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"golden file {path} is missing; run pytest --update-golden and review it")
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path} (review, then pytest --update-golden)"


@pytest.fixture
def golden(request) -> Golden:
    return Golden(request.config.getoption("--update-golden"))


@pytest.fixture
def write_chain(tmp_path):
    """Write a chain file (text) into a temp dir and return its path."""

    def write(text: str, name: str = "chain.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def runtime_python(name: str) -> Path:
    """The interpreter of a synced stage runtime (ICHAIN_RUNTIME_<NAME> overrides, for development)."""
    override = os.environ.get("ICHAIN_RUNTIME_" + re.sub(r"[^A-Z0-9]", "_", name.upper()))
    if override:
        return Path(override)
    from internlm_chain.runtimes.resolve import env_dir

    python = env_dir(name) / "bin" / "python"
    if not python.exists():
        pytest.fail(f"runtime '{name}' is not synced ({python} missing): run `ichain env sync {name}` "
                    "(scripts/test.sh does)")
    return python


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama model + tokenizer (ChatML template), built once per session in the xtuner runtime
    (its transformers is the oldest that reads the model; see workers/tiny_model.py)."""
    import subprocess

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    worker = REPO / "src" / "internlm_chain" / "workers" / "tiny_model.py"
    res = subprocess.run([str(runtime_python("xtuner")), str(worker), str(out)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"tiny_model.py failed:\n{res.stdout}\n{res.stderr}", pytrace=False)
    assert (out / "config.json").is_file()
    return out


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node Slurm cluster on loopback (tests/launch/slurm_cluster.py), shared by the
    launcher and data tests; skipped, saying why, where Slurm cannot be installed or started."""
    import sys

    from tests.launch.slurm_cluster import LocalSlurm, why_unavailable

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
