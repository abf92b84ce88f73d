"""A Job is pure data: what to run, where, with which files — printed exactly by `--dry-run`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class Resources(BaseModel):
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None


class Job(BaseModel):
    """One process (or one distributed launch) of a stage.

    `argv[0]` is the runtime's interpreter (already resolved), so the dry-run line is the one that runs.
    `distributed` jobs are wrapped by the stage's launcher (torchrun / srun); others run as they are.
    """

    stage: str
    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str] = Field(default_factory=dict, description="Environment added to the caller's.")
    files: dict[str, str] = Field(default_factory=dict, description="Absolute path → text, written before launch.")
    resources: Resources = Field(default_factory=Resources)
    runtime: str | None = None
    distributed: bool = False
    slurm_launch: Literal["torchrun", "srun"] = Field(
        "torchrun", description="Under the slurm launcher, how a distributed job starts: torchrun (one task per "
                                "node) or srun alone (one task per process; the program reads SLURM_* itself, "
                                "e.g. upstream `--launcher slurm`).")
    expected_outputs: list[str] = Field(default_factory=list)
    log: str | None = None
    description: str = ""

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.name}"

    def command_line(self) -> str:
        """A paste-able shell line: `cd DIR && env K=V … argv…` (argv shell-quoted)."""
        parts = [f"cd {shlex.quote(self.cwd)} &&"]
        if self.env:
            parts.append("env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())))
        parts.append(shlex.join(self.argv))
        return " ".join(parts)


def render_jobs_text(jobs: list[Job], show_files: bool = False) -> str:
    out: list[str] = []
    for job in jobs:
        out.append(f"# job {job.id}" + (f" — {job.description}" if job.description else ""))
        if job.runtime:
            out.append(f"# runtime: {job.runtime}")
        for path in job.files:
            out.append(f"# writes: {path}")
        for path in job.expected_outputs:
            out.append(f"# expects: {path}")
        out.append(job.command_line())
        if show_files:
            for path, text in job.files.items():
                out.append(f"# ---- file {path} ----")
                out.append(text.rstrip("\n"))
                out.append(f"# ---- end {Path(path).name} ----")
        out.append("")
    return "\n".join(out)


def render_jobs_json(jobs: list[Job], show_files: bool = True) -> str:
    items = []
    for job in jobs:
        d = job.model_dump()
        d["command_line"] = job.command_line()
        if not show_files:
            d["files"] = sorted(d["files"])
        items.append(d)
    return json.dumps(items, indent=2, ensure_ascii=False)
