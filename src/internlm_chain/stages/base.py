"""The contract every stage follows: validate → plan (pure Jobs) → collect (typed artifacts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from internlm_chain.chain.artifacts import Artifact
from internlm_chain.chain.job import Job
from internlm_chain.errors import Problem

if TYPE_CHECKING:
    from internlm_chain.config.loader import LoadedChain


@dataclass
class JobResult:
    job: Job
    returncode: int
    log: str | None = None
    duration_s: float = 0.0
    state: str = "done"  # done | failed | interrupted | submitted


@dataclass
class StageContext:
    """Everything a stage may look at. Building Jobs from it must have no side effects."""

    chain: LoadedChain
    stage: str
    device: str  # resolved: "cpu" or "cuda"
    out_dir: Path  # staging directory the stage's jobs write into
    inputs: dict[str, Artifact] = field(default_factory=dict)  # "stage.output" → artifact
    resolved_settings: Any = None  # the stage section with `${stages…}` references replaced
    metrics: dict[str, Any] = field(default_factory=dict)  # filled by `collect`, stored in the manifest

    @property
    def settings(self) -> Any:
        if self.resolved_settings is not None:
            return self.resolved_settings
        return getattr(self.chain.config.stages, self.stage)

    @property
    def settings_path(self) -> str:
        return f"stages.{self.stage}"

    def python(self, runtime: str) -> list[str]:
        """The argv prefix that runs Python in `runtime` for this stage (interpreter or container)."""
        from internlm_chain.runtimes.resolve import interpreter_argv

        return interpreter_argv(self.chain, self.stage, runtime, self.device)

    def problem(self, field_: str, message: str, hint: str | None = None) -> Problem:
        path = f"{self.settings_path}.{field_}" if field_ else self.settings_path
        return self.chain.problem(path, message, hint)


class Stage:
    """Base class; stage modules define a subclass and a module-level `STAGE` instance."""

    name: ClassVar[str]
    runtime: ClassVar[str | None] = None
    available: ClassVar[bool] = True

    def validate(self, ctx: StageContext) -> list[Problem]:
        return []

    def plan(self, ctx: StageContext) -> list[Job]:
        raise NotImplementedError

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        return {}


class NotAvailableStage(Stage):
    """Stand-in for a stage whose implementation has not landed: plans nothing, refuses to run."""

    available = False

    def __init__(self, name: str):
        self.name = name  # type: ignore[misc]

    def plan(self, ctx: StageContext) -> list[Job]:
        return []
