"""Run (or dry-run) the chain: stages in order, skip the up-to-date ones, publish outputs atomically.

A stage writes into `<workdir>/.staging/<stage>`; only after its jobs succeeded and `collect` verified
the outputs is that directory renamed to `<workdir>/<stage>` and the stage marked done. A killed stage
therefore never looks complete, and its staging directory (with upstream checkpoints) is reused by the
next run when the fingerprint is unchanged, so long jobs resume.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain import __version__
from internlm_chain.chain.artifacts import Artifact, Endpoint
from internlm_chain.chain.fingerprint import content_fingerprint
from internlm_chain.chain.job import Job, render_jobs_json, render_jobs_text
from internlm_chain.chain.manifest import Manifest, StageRecord
from internlm_chain.chain.planner import Planner
from internlm_chain.chain.workdir_lock import WorkdirLock
from internlm_chain.config.loader import LoadedChain
from internlm_chain.errors import ChainError, Problem, StageFailed
from internlm_chain.launch.base import effective_settings, launcher_for
from internlm_chain.stages import STAGE_ORDER
from internlm_chain.stages.base import JobResult, StageContext
from internlm_chain.stages.registry import get_stage


@dataclass
class StageOutcome:
    stage: str
    status: str  # done | up to date | would run | failed | interrupted | submitted
    fingerprint: str = ""
    duration_s: float | None = None
    jobs: list[Job] = field(default_factory=list)
    outputs: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def select_stages(loaded: LoadedChain, only: Sequence[str] | None = None, from_: str | None = None,
                  to: str | None = None, explicit: bool = False) -> list[str]:
    enabled = loaded.config.enabled_stages()
    for name in [*(only or []), *(s for s in (from_, to) if s)]:
        if name not in STAGE_ORDER:
            raise ChainError(Problem(f"'{name}' is not a stage", hint="stages are " + ", ".join(STAGE_ORDER)))
        if name not in enabled:
            section = getattr(loaded.config.stages, name)
            why = "is disabled (enabled: false)" if section is not None else "is not in the chain file"
            raise ChainError(loaded.problem(f"stages.{name}", f"stage '{name}' {why}",
                                            f"add a `stages.{name}` section" if section is None else "enable it"))
    chosen = list(enabled)
    if from_:
        chosen = [s for s in chosen if STAGE_ORDER.index(s) >= STAGE_ORDER.index(from_)]
    if to:
        chosen = [s for s in chosen if STAGE_ORDER.index(s) <= STAGE_ORDER.index(to)]
    if only:
        chosen = [s for s in chosen if s in only]
    if not chosen and not explicit:
        raise ChainError(Problem("no stage selected", hint="enable a stage or loosen --from/--to/--only"))
    return chosen


def _outputs_present(record: StageRecord) -> bool:
    return all(isinstance(a, Endpoint) or Path(a.path).exists() for a in record.outputs.values())


def _relocate(artifact: Artifact, old: Path, new: Path) -> Artifact:
    path = artifact.path
    if not isinstance(artifact, Endpoint) and (path == str(old) or path.startswith(str(old) + os.sep)):
        path = str(new) + path[len(str(old)):]
    return artifact.model_copy(update={"path": path})


def _publish(staging: Path, final: Path) -> None:
    """Swap the finished staging directory into place; the old output is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{int(time.time())}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ChainRunner:
    def __init__(self, loaded: LoadedChain, quiet: bool = False, force: bool = False):
        self.loaded = loaded
        self.quiet = quiet
        self.force = force
        self.workdir = loaded.workdir
        self.manifest = Manifest.load(self.workdir)
        done = {f"{s}.{k}": a for s, rec in self.manifest.stages.items() if rec.state == "done"
                for k, a in rec.outputs.items()}
        self.planner = Planner(loaded, done)

    # ---- shared by run and dry-run -------------------------------------------------------------
    def _launcher(self, stage: str):
        section = getattr(self.loaded.config.stages, stage)
        return launcher_for(effective_settings(self.loaded.config.launcher, section.launcher))

    def _prepare(self, stage: str) -> tuple[StageContext, str, bool]:
        impl = get_stage(stage)
        ctx = self.planner.context(stage)
        problems = impl.validate(ctx)
        if problems:
            raise ChainError(problems)
        fp = self.planner.fingerprint(ctx)
        record = self.manifest.stages.get(stage)
        current = (not self.force and record is not None and record.state == "done"
                   and record.fingerprint == fp and _outputs_present(record))
        if current and hasattr(impl, "is_current"):
            current = impl.is_current(ctx, record)
        return ctx, fp, current

    def _jobs(self, stage: str, ctx: StageContext) -> list[Job]:
        impl = get_stage(stage)
        launcher = self._launcher(stage)
        jobs = []
        for job in impl.plan(ctx):
            if job.log is None:
                job = job.model_copy(update={"log": str(ctx.out_dir / "logs" / f"{job.name}.log")})
            jobs.append(launcher.render(job))
        return jobs

    # ---- dry-run ---------------------------------------------------------------------------------
    def dry_run(self, stages: list[str]) -> list[StageOutcome]:
        outcomes = []
        for stage in stages:
            ctx, fp, current = self._prepare(stage)
            if current:
                outcomes.append(StageOutcome(stage, "up to date", fp))
                continue
            jobs = self._jobs(stage, ctx)
            status = "would run" if get_stage(stage).available else "not available yet"
            outcomes.append(StageOutcome(stage, status, fp, jobs=jobs))
            self.planner.artifacts.update(self.planner.predicted_outputs(ctx))
        return outcomes

    # ---- real run --------------------------------------------------------------------------------
    def run(self, stages: list[str]) -> list[StageOutcome]:
        outcomes = []
        with WorkdirLock(self.workdir):
            self.manifest = Manifest.load(self.workdir)
            self.manifest.chain = self.loaded.config.name
            self.manifest.chain_file = str(self.loaded.path)
            self.manifest.version = __version__
            for stage in stages:
                outcomes.append(self._run_stage(stage))
        return outcomes

    def _check_runnable(self, stage: str, jobs: list[Job]) -> None:
        impl = get_stage(stage)
        if not impl.available:
            raise ChainError(Problem(f"stage '{stage}' is not available yet in this version of internlm-chain",
                                     hint="use --dry-run to see what it will run"))
        for job in jobs:
            exe = job.argv[0]
            if os.sep in exe and not Path(exe).exists():
                runtime = job.runtime or "?"
                raise ChainError(Problem(f"{stage}: runtime '{runtime}' is not synced ({exe} is missing)",
                                         hint=f"run `ichain env sync {runtime}`"))

    def _run_stage(self, stage: str) -> StageOutcome:
        impl = get_stage(stage)
        ctx, fp, current = self._prepare(stage)
        record = self.manifest.record(stage)
        if current:
            self.planner.artifacts.update({f"{stage}.{k}": a for k, a in record.outputs.items()})
            return StageOutcome(stage, "up to date", fp, record.duration_s, outputs=dict(record.outputs),
                                metrics=record.metrics)
        staging = self.planner.staging_dir(stage)
        marker = staging / ".fingerprint"
        if staging.exists() and (not marker.exists() or marker.read_text() != fp):
            shutil.rmtree(staging)  # a different configuration: nothing there can be resumed
        staging.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
        jobs = self._jobs(stage, ctx)
        self._check_runnable(stage, jobs)

        record = StageRecord(state="running", fingerprint=fp, started=time.time(), pid=os.getpid(),
                             commands=[j.command_line() for j in jobs],
                             runtime={"name": impl.runtime} if impl.runtime else {})
        self.manifest.stages[stage] = record
        self.manifest.save(self.workdir)
        launcher = self._launcher(stage)
        results: list[JobResult] = []
        for job in jobs:
            result = launcher.run(job, quiet=self.quiet)
            results.append(result)
            if result.log:
                record.logs.append(result.log)
            if result.state != "done":
                return self._fail(stage, record, result, ctx)
        try:
            outputs = impl.collect(ctx, results)
            missing = [f"{k} ({a.path})" for k, a in outputs.items()
                       if not isinstance(a, Endpoint) and not Path(a.path).exists()]
            if missing:
                raise StageFailed(Problem(f"{stage} finished but its outputs are missing: " + ", ".join(missing)))
        except ChainError as exc:
            record.state, record.error = "failed", "; ".join(p.render() for p in exc.problems)
            record.ended = time.time()
            self.manifest.save(self.workdir)
            raise
        final = self.planner.stage_dir(stage)
        marker.unlink(missing_ok=True)
        _publish(staging, final)
        published: dict[str, Artifact] = {}
        for key, art in outputs.items():
            art = _relocate(art, staging, final)
            if not art.fingerprint and not isinstance(art, Endpoint):
                art = art.model_copy(update={"fingerprint": content_fingerprint(art.path)})
            published[key] = art
        record.logs = [str(final) + log[len(str(staging)):] if log.startswith(str(staging)) else log
                       for log in record.logs]
        record.outputs = published
        record.metrics = ctx.metrics
        record.state = "done"
        record.ended = time.time()
        record.duration_s = round(record.ended - (record.started or record.ended), 3)
        self.manifest.save(self.workdir)
        self.planner.artifacts.update({f"{stage}.{k}": a for k, a in published.items()})
        return StageOutcome(stage, "done", fp, record.duration_s, jobs, published, ctx.metrics)

    def _fail(self, stage: str, record: StageRecord, result: JobResult, ctx: StageContext | None = None) -> StageOutcome:
        record.state = "interrupted" if result.state == "interrupted" else "failed"
        record.ended = time.time()
        record.error = f"job {result.job.name} exited with code {result.returncode}"
        self.manifest.save(self.workdir)
        if result.state == "interrupted":
            raise ChainError(Problem(f"{stage} interrupted; re-run to resume", hint=f"log: {result.log}"),
                             exit_code=130)
        # a stage may know what a failed job means (e.g. which data row broke XTuner's dataset check)
        explain = getattr(get_stage(stage), "explain_failure", None)
        explained = explain(ctx, result) if explain and ctx is not None else None
        if explained is not None:
            raise StageFailed(explained)
        raise StageFailed(Problem(f"{stage}: {record.error}", hint=f"log: {result.log}"))


def run_chain(loaded: LoadedChain, only: Sequence[str] | None = None, from_: str | None = None,
              to: str | None = None, force: bool = False, dry_run: bool = False, as_json: bool = False,
              show_files: bool = False, explicit: bool = False, quiet: bool = False) -> list[StageOutcome]:
    from internlm_chain.cli.output import out, print_json

    stages = select_stages(loaded, only, from_, to, explicit)
    runner = ChainRunner(loaded, quiet=quiet or as_json, force=force)
    if dry_run:
        outcomes = runner.dry_run(stages)
        if as_json:
            import json

            print_json([{"stage": o.stage, "status": o.status, "fingerprint": o.fingerprint,
                         "jobs": json.loads(render_jobs_json(o.jobs, show_files=True))} for o in outcomes])
        else:
            for o in outcomes:
                out.print(f"# ===== stage {o.stage}: {o.status} (fingerprint {o.fingerprint[:12]}) =====",
                          markup=False)
                if o.jobs:
                    out.print(render_jobs_text(o.jobs, show_files=show_files), markup=False)
        return outcomes
    outcomes = runner.run(stages)
    from internlm_chain.cli.summary import print_summary

    print_summary(outcomes, runner.workdir, as_json=as_json)
    return outcomes
