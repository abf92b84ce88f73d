"""The launcher contract: `render` is pure (dry-run shows it), `run` executes what `render` returned."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from internlm_chain.chain.job import Job
from internlm_chain.config.base import LauncherSettings
from internlm_chain.errors import ChainError, Problem

if TYPE_CHECKING:
    from internlm_chain.stages.base import JobResult

# Below Linux's ephemeral range (32768+), above the well-known and registered-by-convention low ports.
PORT_BASE, PORT_SPAN = 10000, 22000
_PYTHON = re.compile(r"python(\d+(\.\d+)*)?$")


class Launcher:
    kind = "base"

    def __init__(self, settings: LauncherSettings, workdir: Path | None = None):
        self.settings = settings
        self.workdir = workdir

    def render(self, job: Job) -> Job:
        """The job as it will actually be started (argv wrapped, launch scripts added to `files`)."""
        return job

    def run(self, job: Job, quiet: bool = False, on_submit: Callable[[str], None] | None = None) -> JobResult:
        """Run a rendered job to its end. `on_submit(id)` is called as soon as a scheduler accepted it."""
        raise NotImplementedError

    def master_port(self, job: Job) -> int:
        if self.settings.master_port:
            return self.settings.master_port
        return derived_port(self.workdir, job.stage)


def derived_port(workdir: Path | None, stage: str) -> int:
    """A port that depends only on (workdir, stage): dry-run shows the port the run will use, and two
    chains (or two stages) on one machine are unlikely to collide."""
    digest = hashlib.sha256(f"{workdir or ''}\0{stage}".encode()).digest()
    return PORT_BASE + int.from_bytes(digest[:4], "big") % PORT_SPAN


def split_interpreter(job: Job) -> tuple[list[str], list[str]]:
    """`argv` → (the runtime's Python prefix, the script/module and its arguments).

    The prefix may be a container call ending in `python` (see runtimes/resolve.py).
    """
    for i, token in enumerate(job.argv):
        if _PYTHON.match(os.path.basename(token)):
            return job.argv[: i + 1], job.argv[i + 1:]
    raise ChainError(Problem(f"{job.id}: a distributed job must start with a Python interpreter, "
                             f"not '{job.argv[0]}'", hint="stages build distributed argv with ctx.python()"))


def torchrun_args(settings: LauncherSettings, port: int | str, node_rank: str | None = None,
                  master_addr: str | None = None, rdzv_id: str = "ichain") -> list[str]:
    """`torch.distributed.run` options; `node_rank`/`master_addr` may be shell words under Slurm."""
    args = ["-m", "torch.distributed.run", "--nnodes", str(settings.nnodes),
            "--nproc-per-node", str(settings.nproc_per_node)]
    addr = master_addr or settings.master_addr
    if settings.rdzv_backend == "c10d":
        args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{addr}:{port}", "--rdzv-id", rdzv_id]
    else:
        rank = node_rank if node_rank is not None else str(settings.node_rank)
        args += ["--node-rank", rank, "--master-addr", addr, "--master-port", str(port)]
    return args


def effective_settings(chain_default: LauncherSettings, stage_override: LauncherSettings | None) -> LauncherSettings:
    """The stage's launcher: the chain default with the fields the stage set on top."""
    if stage_override is None:
        return chain_default
    merged = chain_default.model_dump()
    for name in stage_override.model_fields_set:
        value = getattr(stage_override, name)
        if name == "slurm":
            slurm = chain_default.slurm.model_dump()
            slurm.update({k: getattr(value, k) for k in value.model_fields_set})
            merged["slurm"] = slurm
        else:
            merged[name] = value.model_dump() if hasattr(value, "model_dump") else value
    return LauncherSettings.model_validate(merged)


def launcher_for(settings: LauncherSettings, workdir: Path | None = None) -> Launcher:
    if settings.kind == "torchrun":
        from internlm_chain.launch.torchrun import TorchrunLauncher

        return TorchrunLauncher(settings, workdir)
    if settings.kind == "slurm":
        from internlm_chain.launch.slurm import SlurmLauncher

        return SlurmLauncher(settings, workdir)
    from internlm_chain.launch.local import LocalLauncher

    return LocalLauncher(settings, workdir)
