"""Fixtures for the runtime tests: a private cache and locks folder, and `ichain` run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two small pure-Python projects (in uv's cache after the first run, so syncing them takes about a second).
TINY_LOCK = """\
# A test-only runtime.
# ichain-import: six idna
six==1.16.0
idna==3.7
"""


class Cli:
    def __init__(self, cache: Path, locks: Path):
        self.cache, self.locks = cache, locks
        self.env = {**os.environ, "ICHAIN_CACHE": str(cache), "ICHAIN_LOCKS_DIR": str(locks),
                    "COLUMNS": "200", "NO_COLOR": "1"}

    def lock(self, name: str, text: str) -> Path:
        path = self.locks / name
        path.write_text(text, encoding="utf-8")
        return path

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        merged = {k: v for k, v in {**self.env, **(env or {})}.items() if v is not None}  # None: unset it
        return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                              env=merged, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "internlm_chain", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def json(self, *args: str) -> dict:
        res = self(*args, "--json")
        assert res.stdout, res.stderr
        return json.loads(res.stdout)

    def env_python(self, runtime: str) -> Path:
        return self.cache / "envs" / runtime / "bin" / "python"

    def installed(self, runtime: str, dist: str) -> str:
        res = subprocess.run([str(self.env_python(runtime)), "-c",
                              f"import importlib.metadata as m; print(m.version({dist!r}))"],
                             capture_output=True, text=True, check=True)
        return res.stdout.strip()


@pytest.fixture
def cli(tmp_path, monkeypatch) -> Cli:
    cache, locks = tmp_path / "cache", tmp_path / "locks"
    locks.mkdir()
    monkeypatch.setenv("ICHAIN_CACHE", str(cache))
    monkeypatch.setenv("ICHAIN_LOCKS_DIR", str(locks))
    return Cli(cache, locks)
