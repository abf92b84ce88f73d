"""`<workdir>/manifest.json`: the record of every stage run (state, fingerprint, commands, outputs)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from internlm_chain.chain.artifacts import AnyArtifact


class StageRecord(BaseModel):
    state: str = "pending"  # pending | running | done | failed | interrupted | submitted
    fingerprint: str = ""
    started: float | None = None
    ended: float | None = None
    duration_s: float | None = None
    pid: int | None = None
    commands: list[str] = Field(default_factory=list)
    runtime: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, AnyArtifact] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    logs: list[str] = Field(default_factory=list)
    slurm_jobs: list[str] = Field(default_factory=list, description="Slurm job ids, in submission order.")
    error: str | None = None


class Manifest(BaseModel):
    chain: str = ""
    chain_file: str = ""
    version: str = ""
    stages: dict[str, StageRecord] = Field(default_factory=dict)

    @classmethod
    def load(cls, workdir: Path) -> Manifest:
        path = workdir / "manifest.json"
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def save(self, workdir: Path) -> None:
        """Atomic: a reader (or a crash) sees the old manifest or the new one, never half of one."""
        write_atomic(workdir / "manifest.json", self.model_dump_json(indent=2))

    def record(self, stage: str) -> StageRecord:
        return self.stages.setdefault(stage, StageRecord())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide reports and manifests from other users
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
