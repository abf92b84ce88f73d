"""The launcher contract: `render` is pure (dry-run shows it), `run` executes what `render` returned."""

from __future__ import annotations

from typing import TYPE_CHECKING

from internlm_chain.chain.job import Job
from internlm_chain.config.base import LauncherSettings

if TYPE_CHECKING:
    from internlm_chain.stages.base import JobResult


class Launcher:
    kind = "base"

    def __init__(self, settings: LauncherSettings):
        self.settings = settings

    def render(self, job: Job) -> Job:
        """The job as it will actually be started (argv wrapped, launch scripts added to `files`)."""
        return job

    def run(self, job: Job, quiet: bool = False) -> JobResult:
        raise NotImplementedError


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


def launcher_for(settings: LauncherSettings) -> Launcher:
    from internlm_chain.launch.local import LocalLauncher

    if settings.kind == "local":
        return LocalLauncher(settings)
    if settings.kind == "torchrun":
        from internlm_chain.launch.torchrun import TorchrunLauncher

        return TorchrunLauncher(settings)
    from internlm_chain.launch.slurm import SlurmLauncher

    return SlurmLauncher(settings)
