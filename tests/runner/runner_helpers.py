"""Helpers for the runner tests: chains of cheap fake stages (fake_stages.py, via `plugin:`), `ichain` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAKE = Path(__file__).with_name("fake_stages.py")
# data → pretrain → finetune; eval needs only data; deploy → eval; agent → deploy
GRAPH = {"data": "ECHO", "pretrain": "NEEDS_DATA", "finetune": "NEEDS_PRETRAIN", "eval": "NEEDS_DATA",
         "deploy": "NEEDS_EVAL", "agent": "NEEDS_DEPLOY"}


def chain_text(stages: dict[str, str], extra: str = "") -> str:
    lines = ["name: fake", "workdir: wd", "device: cpu", extra.rstrip(), "stages:"]
    lines += [f"  {stage}: {{plugin: {FAKE}:{attr}}}" for stage, attr in stages.items()]
    return "\n".join(line for line in lines if line) + "\n"


def ichain(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
           **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout, **popen)


def manifest(workdir: Path) -> dict:
    return json.loads((workdir / "manifest.json").read_text())


def attempts(workdir: Path, stage: str) -> int:
    """How many times the stage's job started, in its published or staging directory."""
    for d in (workdir / stage, workdir / ".staging" / stage):
        if (d / "attempts.txt").exists():
            return len((d / "attempts.txt").read_text().splitlines())
    return 0
