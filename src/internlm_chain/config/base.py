"""Shared pydantic building blocks for the chain file."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors (with a did-you-mean), never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


Device = Literal["auto", "cpu", "cuda"]
Variant = Literal["cpu", "cuda"]


class RuntimeSpec(StrictModel):
    """Where a stage's upstream code runs: a synced locked env (default), an interpreter, or an image."""

    python: str | None = Field(None, description="Use this existing interpreter instead of a synced runtime.")
    image: str | None = Field(None, description="Container image that holds the runtime.")
    engine: Literal["apptainer", "docker"] = Field("apptainer", description="Container engine for `image`.")
    variant: Variant | None = Field(None, description="Lock variant; default follows the chain's device.")


class SlurmSettings(StrictModel):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(None, description="Wall-time limit, Slurm syntax (e.g. 04:00:00).")
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, description="Memory per node, Slurm syntax (e.g. 200G).")
    gpus_per_node: int | None = Field(None, ge=0)
    extra_args: list[str] = Field(default_factory=list, description="Extra #SBATCH options, verbatim.")
    wait: bool = Field(True, description="Follow the job until it ends (false: submit and return).")


class LauncherSettings(StrictModel):
    """How a stage's jobs start. A stage's `launcher:` overrides the chain default field by field."""

    kind: Literal["local", "torchrun", "slurm"] = "local"
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int | None = Field(None, ge=1, le=65535, description="Default: derived from the workdir.")
    rdzv_backend: Literal["c10d", "static"] = "static"
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)


class StageSettings(StrictModel):
    """Fields every stage section has. Stage modules subclass this."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ()

    enabled: bool = Field(True, description="Set false to skip this stage in `ichain run`.")
    runtime: RuntimeSpec | None = Field(None, description="Override where this stage's upstream code runs.")
    launcher: LauncherSettings | None = Field(None, description="Override the chain's launcher for this stage.")
    plugin: str | None = Field(
        None, description="Replace the stage's implementation: `module:NAME` or `path/to/file.py:NAME` (a Stage "
                          "instance or class); its settings stay this section's.")
