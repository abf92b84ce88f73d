"""Run (or dry-run) the chain: stages in order, skip the up-to-date ones, publish outputs atomically.

A stage writes into `<workdir>/.staging/<stage>`; only after its jobs succeeded and `collect` verified
the outputs is that directory renamed to `<workdir>/<stage>` and the stage marked done. A killed stage
therefore never looks complete, and its staging directory (with upstream checkpoints) is reused by the
next run when the fingerprint is unchanged, so long jobs resume.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager, suppress
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
from internlm_chain.runtimes.resolve import wrap_job_env
from internlm_chain.stages import STAGE_ORDER
from internlm_chain.stages.base import JobResult, StageContext


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


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM between jobs unwinds like Ctrl-C: the running stage is recorded as interrupted and the
    workdir lock released (during a job the launcher forwards it to the job first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class ChainRunner:
    def __init__(self, loaded: LoadedChain, quiet: bool = False, force: bool = False, verbose: bool = False,
                 restart: Sequence[str] = ()):
        self.loaded = loaded
        self.restart = set(restart)  # service stages asked for by name (`--only`): a stopped one starts again
        self.quiet = quiet
        self.verbose = verbose
        self.force = force
        self.workdir = loaded.workdir
        self.manifest = Manifest.load(self.workdir)
        self.planner = Planner(loaded, self._done_artifacts())

    def _done_artifacts(self) -> dict[str, Artifact]:
        return {f"{s}.{k}": a for s, rec in self.manifest.stages.items() if rec.state == "done"
                for k, a in rec.outputs.items()}

    # ---- shared by run and dry-run -------------------------------------------------------------
    def settings(self, stage: str):
        section = getattr(self.loaded.config.stages, stage)
        return effective_settings(self.loaded.config.launcher, section.launcher)

    def _launcher(self, stage: str):
        return launcher_for(self.settings(stage), self.workdir)

    def _check_inputs(self, stage: str, coming: set[str] = frozenset()) -> None:
        """A stage whose producer has no outputs (never ran, failed, not selected) stops here, in one line."""
        for dep in self.planner.dependencies(stage):
            if dep in coming or any(k.split(".")[0] == dep for k in self.planner.artifacts):
                continue
            rec = self.manifest.stages.get(dep)
            why = "has not run yet" if rec is None or rec.state == "pending" else f"is {rec.state}, not done"
            raise ChainError(self.loaded.problem(
                f"stages.{stage}", f"{stage} needs the outputs of `{dep}`, which {why}",
                f"run `ichain run {_display(self.loaded.path)} --only {dep}` first"))

    def _prepare(self, stage: str, coming: set[str] = frozenset()) -> tuple[StageContext, str, bool]:
        impl = self.planner.impl(stage)
        self._check_inputs(stage, coming)
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

    def _planned(self, stage: str, ctx: StageContext) -> list[Job]:
        """The stage's own Jobs, each with its log under the staging directory's logs/."""
        jobs = []
        for job in self.planner.impl(stage).plan(ctx):
            if job.log is None:
                job = job.model_copy(update={"log": str(ctx.out_dir / "logs" / f"{job.name}.log")})
            # docker passes neither our environment nor our cwd into the container: say both explicitly
            job = job.model_copy(update={"argv": wrap_job_env(job.argv, job.env, job.cwd)})
            jobs.append(job)
        return jobs

    def _jobs(self, stage: str, ctx: StageContext, planned: list[Job] | None = None) -> list[Job]:
        """The Jobs as the stage's launcher will start them (what dry-run prints)."""
        launcher = self._launcher(stage)
        return [launcher.render(job) for job in (planned if planned is not None else self._planned(stage, ctx))]

    # ---- dry-run and preflight: the run as it would go, nothing started --------------------------
    def _walk(self, stages: list[str], problems: list[Problem] | None = None):
        """Yield (stage, ctx, fingerprint, will_run) in order; a stage that will run lends its predicted
        outputs to the ones after it. With `problems`, a stage whose checks fail is recorded there and
        counted as running (its dependants' own faults still show); without, the failure raises."""
        coming: set[str] = set()
        for stage in stages:
            try:
                ctx, fp, current = self._prepare(stage, coming)
            except ChainError as exc:
                if problems is None:
                    raise
                problems += exc.problems
                coming.add(stage)
                with suppress(ChainError):
                    self.planner.artifacts.update(self.planner.predicted_outputs(self.planner.context(stage)))
                continue
            will_run = not current or bool(coming.intersection(self.planner.dependencies(stage)))
            yield stage, ctx, fp, will_run
            if will_run:
                coming.add(stage)
                self.planner.artifacts.update(self.planner.predicted_outputs(ctx))

    def dry_run(self, stages: list[str]) -> list[StageOutcome]:
        outcomes = []
        for stage, ctx, fp, will_run in self._walk(stages):
            if not will_run:
                outcomes.append(StageOutcome(stage, "up to date", fp))
                continue
            status = "would run" if self.planner.impl(stage).available else "not available yet"
            outcomes.append(StageOutcome(stage, status, fp, jobs=self._jobs(stage, ctx)))
        return outcomes

    def preflight(self, stages: list[str]) -> list[Problem]:
        """Every problem of every stage the run would start — settings, inputs as they will be, runtimes —
        collected before the first job starts, so a mistake in the last stage costs seconds, not the
        hours of the stages before it."""
        from internlm_chain.chain.validate import drop_echoes

        problems: list[Problem] = []
        for stage, ctx, _, will_run in self._walk(stages, problems):
            if will_run:
                try:
                    self._check_runnable(stage, self._planned(stage, ctx))
                except ChainError as exc:
                    problems += exc.problems
        return drop_echoes(problems)

    # ---- real run --------------------------------------------------------------------------------
    def run(self, stages: list[str]) -> list[StageOutcome]:
        outcomes: list[StageOutcome] = []
        with WorkdirLock(self.workdir), _sigterm_as_interrupt():
            # what another run did while we were not holding the lock counts
            self.manifest = Manifest.load(self.workdir)
            self.planner.artifacts = self._done_artifacts()
            self.manifest.chain = self.loaded.config.name
            self.manifest.chain_file = str(self.loaded.path)
            self.manifest.version = __version__
            problems = ChainRunner(self.loaded, force=self.force).preflight(stages)
            if problems:
                raise ChainError(problems)
            for i, stage in enumerate(stages):
                outcomes.append(self._run_stage(stage, later=stages[i + 1:]))
                if outcomes[-1].status == "submitted":  # later stages need its outputs: collect first
                    outcomes += [StageOutcome(s, "waiting") for s in stages[i + 1:]]
                    break
        return outcomes

    def _check_runnable(self, stage: str, jobs: list[Job]) -> None:
        impl = self.planner.impl(stage)
        if not impl.available:
            raise ChainError(Problem(f"stage '{stage}' is not available yet in this version of internlm-chain",
                                     hint="use --dry-run to see what it will run"))
        for job in jobs:
            exe = job.argv[0]
            if os.sep in exe and not Path(exe).exists():
                runtime = job.runtime or impl.runtime or "?"
                raise ChainError(Problem(f"{stage}: runtime '{runtime}' is not synced ({exe} is missing)",
                                         hint=f"run `ichain env sync {runtime}`"))

    def is_stopped_service(self, stage: str, fp: str, record: StageRecord | None) -> bool:
        """A service stage that completed with these exact inputs, whose server has since stopped."""
        return (getattr(self.planner.impl(stage), "service", False) and not self.force and record is not None
                and record.state == "done" and record.fingerprint == fp and _outputs_present(record))

    def _service_needed(self, stage: str, later: Sequence[str]) -> bool:
        """Whether a later stage that consumes this service's outputs is going to run."""
        for other in later:
            if stage not in self.planner.dependencies(other):
                continue
            try:
                _, _, current = self._prepare(other)
            except ChainError:
                return True
            if not current:
                return True
        return False

    def _run_stage(self, stage: str, later: Sequence[str] = ()) -> StageOutcome:
        impl = self.planner.impl(stage)
        ctx, fp, current = self._prepare(stage)
        record = self.manifest.stages.get(stage)
        if not current and self.is_stopped_service(stage, fp, record):
            # a finished service (e.g. a server stopped after the chain) is restarted only when a
            # stage that talks to it still has work to do; otherwise a re-run stays a no-op
            self.planner.artifacts.update({f"{stage}.{k}": a for k, a in record.outputs.items()})
            if stage not in self.restart and not self._service_needed(stage, later):
                return StageOutcome(stage, "up to date (stopped)", fp, record.duration_s,
                                    outputs=dict(record.outputs), metrics=record.metrics)
        if current:
            self.planner.artifacts.update({f"{stage}.{k}": a for k, a in record.outputs.items()})
            return StageOutcome(stage, "up to date", fp, record.duration_s, outputs=dict(record.outputs),
                                metrics=record.metrics)
        planned = self._planned(stage, ctx)
        if (record is not None and record.state == "submitted" and record.fingerprint == fp
                and not self.force and len(record.slurm_jobs) == len(planned)):
            return self._guard(stage, record, lambda: self._resume_submitted(stage, ctx, fp, record, planned))
        if record is not None and record.state == "submitted" and record.slurm_jobs:
            from internlm_chain.launch.slurm import cancel

            cancel(record.slurm_jobs)  # superseded by this run: its results would be thrown away
        staging = self.planner.staging_dir(stage)
        marker = staging / ".fingerprint"
        if staging.exists() and (not marker.exists() or marker.read_text() != fp):
            shutil.rmtree(staging)  # a different configuration: nothing there can be resumed
        self._check_runnable(stage, planned)
        jobs = self._jobs(stage, ctx, planned)
        staging.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)

        record = StageRecord(state="running", fingerprint=fp, started=time.time(), pid=os.getpid(),
                             commands=[j.command_line() for j in jobs],
                             runtime={"name": impl.runtime} if impl.runtime else {})
        self.manifest.stages[stage] = record
        self.manifest.save(self.workdir)
        return self._guard(stage, record, lambda: self._launch(stage, ctx, fp, record, jobs))

    def _guard(self, stage: str, record: StageRecord, body) -> StageOutcome:
        """Whatever stops a stage (failure, Ctrl-C, SIGTERM, a bug) is written to the manifest first."""
        try:
            return body()
        except KeyboardInterrupt:
            self._end(record, "interrupted", "interrupted by a signal")
            raise ChainError(Problem(f"{stage} interrupted; re-run to resume"), exit_code=130) from None
        except ChainError as exc:
            if record.state not in ("failed", "interrupted"):
                self._end(record, "failed", "; ".join(p.render() for p in exc.problems))
            raise
        except Exception as exc:
            self._end(record, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise

    def _end(self, record: StageRecord, state: str, error: str | None) -> None:
        record.state, record.error, record.ended = state, error, time.time()
        self.manifest.save(self.workdir)

    def _submitted(self, record: StageRecord, job_id: str) -> None:
        record.slurm_jobs.append(job_id)
        self.manifest.save(self.workdir)  # before following it: a killed `ichain` can still find the job

    def _launch(self, stage: str, ctx: StageContext, fp: str, record: StageRecord, jobs: list[Job]) -> StageOutcome:
        from internlm_chain.cli.output import info

        launcher = self._launcher(stage)
        results: list[JobResult] = []
        for job in jobs:
            if self.verbose:
                info(f"$ {job.command_line()}")
            result = launcher.run(job, quiet=self.quiet, on_submit=lambda jid: self._submitted(record, jid))
            results.append(result)
            if result.log and result.log not in record.logs:
                record.logs.append(result.log)
            if result.state not in ("done", "submitted"):
                return self._fail(stage, record, result, ctx)
        if any(r.state == "submitted" for r in results):
            record.state = "submitted"
            self.manifest.save(self.workdir)
            return StageOutcome(stage, "submitted", fp, jobs=jobs)
        return self._finish(stage, ctx, fp, record, jobs, results)

    def _resume_submitted(self, stage: str, ctx: StageContext, fp: str, record: StageRecord,
                          planned: list[Job]) -> StageOutcome:
        """A stage submitted with `slurm.wait: false`: follow (or just read) its jobs, then collect."""
        from internlm_chain.launch.slurm import SlurmLauncher, job_state

        settings = self.settings(stage)
        launcher = SlurmLauncher(settings, self.workdir)
        jobs = [launcher.render(j) for j in planned]
        results: list[JobResult] = []
        for job, job_id in zip(jobs, record.slurm_jobs, strict=True):
            if not job_state(job_id).finished and not (settings.kind == "slurm" and settings.slurm.wait):
                return StageOutcome(stage, "submitted", fp, jobs=jobs)
            result = launcher.follow(job, job_id, quiet=self.quiet)
            results.append(result)
            if result.state != "done":
                return self._fail(stage, record, result, ctx)
        record.state = "running"
        self.manifest.save(self.workdir)
        return self._finish(stage, ctx, fp, record, jobs, results)

    def _finish(self, stage: str, ctx: StageContext, fp: str, record: StageRecord, jobs: list[Job],
                results: list[JobResult]) -> StageOutcome:
        """Collect (verify) the outputs, publish the staging directory, then — only then — mark done."""
        staging = self.planner.staging_dir(stage)
        outputs = self.planner.impl(stage).collect(ctx, results)
        missing = [f"{k} ({a.path})" for k, a in outputs.items()
                   if not isinstance(a, Endpoint) and not Path(a.path).exists()]
        if missing:
            raise StageFailed(Problem(f"{stage} finished but its outputs are missing: " + ", ".join(missing)))
        final = self.planner.stage_dir(stage)
        (staging / ".fingerprint").unlink(missing_ok=True)
        _publish(staging, final)
        published: dict[str, Artifact] = {}
        for key, art in outputs.items():
            art = _relocate(art, staging, final)
            if not art.fingerprint:
                # an endpoint has no content to hash: its identity is the stage run that serves it
                fp_art = f"stage:{fp}" if isinstance(art, Endpoint) else content_fingerprint(art.path)
                art = art.model_copy(update={"fingerprint": fp_art})
            published[key] = art
        record.logs = [str(final) + log[len(str(staging)):] if log.startswith(str(staging)) else log
                       for log in record.logs]
        record.outputs = published
        record.metrics = ctx.metrics
        record.state = "done"
        record.error = None
        record.ended = time.time()
        record.duration_s = round(record.ended - (record.started or record.ended), 3)
        self.manifest.save(self.workdir)
        self.planner.artifacts.update({f"{stage}.{k}": a for k, a in published.items()})
        return StageOutcome(stage, "done", fp, record.duration_s, jobs, published, ctx.metrics)

    def _fail(self, stage: str, record: StageRecord, result: JobResult,
              ctx: StageContext | None = None) -> StageOutcome:
        state = "interrupted" if result.state == "interrupted" else "failed"
        where = f" (slurm job {record.slurm_jobs[-1]})" if record.slurm_jobs else ""
        error = (f"job {result.job.name}{where} was interrupted" if state == "interrupted"
                 else f"job {result.job.name}{where} exited with code {result.returncode}")
        self._end(record, state, error)
        if state == "interrupted":
            raise ChainError(Problem(f"{stage}: {error}; re-run to resume", hint=f"log: {result.log}"),
                             exit_code=130)
        # a stage may know what a failed job means (e.g. which data row broke XTuner's dataset check)
        explain = getattr(self.planner.impl(stage), "explain_failure", None)
        explained = explain(ctx, result) if explain is not None and ctx is not None else None
        if explained is not None:
            raise StageFailed(explained)
        raise StageFailed(Problem(f"{stage}: {error}", hint=f"log: {result.log}"))


def run_chain(loaded: LoadedChain, only: Sequence[str] | None = None, from_: str | None = None,
              to: str | None = None, force: bool = False, dry_run: bool = False, as_json: bool = False,
              show_files: bool = False, explicit: bool = False, quiet: bool = False,
              verbose: bool = False) -> list[StageOutcome]:
    from internlm_chain.cli.output import out, print_json

    stages = select_stages(loaded, only, from_, to, explicit)
    runner = ChainRunner(loaded, quiet=quiet or as_json, force=force, verbose=verbose and not as_json,
                         restart=only or ())
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

    print_summary(outcomes, runner.workdir, as_json=as_json, chain_file=_display(loaded.path))
    return outcomes
