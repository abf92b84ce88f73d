"""The `agent` stage: Lagent agents with AgentLego tools, run in the agent runtime by `agentrun`.

One Job answers `questions` (transcripts.json), one runs the `bench` tasks (bench.json). Both read the
spec.json the stage renders; the worker records failures (unreachable endpoint, HTTP errors) in its
output and exits 0 under `--errors-in-output`, so `collect` can say what went wrong in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from internlm_chain.chain.artifacts import AgentTranscript, Artifact
from internlm_chain.chain.job import Job
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.agent import spec as agentspec
from internlm_chain.stages.base import JobResult, Stage, StageContext

TRANSCRIPTS = "transcripts.json"
BENCH = "bench.json"


class AgentStage(Stage):
    name = "agent"
    runtime = "agent"
    needs = ("deploy",)

    def _endpoint(self, ctx: StageContext) -> Artifact | None:
        return ctx.inputs.get("deploy.endpoint")

    def _deploy_coming(self, ctx: StageContext) -> bool:
        return "deploy" in ctx.chain.config.enabled_stages()

    def validate(self, ctx: StageContext) -> list[Problem]:
        return agentspec.check(ctx.settings, ctx.problem, base_dir=ctx.chain.base_dir, endpoint=self._endpoint(ctx),
                               deploy_coming=self._deploy_coming(ctx), python=self._python(ctx), need_work=True)

    def _python(self, ctx: StageContext) -> list[str] | None:
        try:
            return ctx.python(self.runtime)
        except Exception:  # an unresolvable runtime is the runner's to report, not validation's
            return None

    def plan(self, ctx: StageContext) -> list[Job]:
        s = ctx.settings
        choice = agentspec.choose_llm(s, self._endpoint(ctx), ctx.chain.base_dir)
        if choice is None:
            raise StageFailed(ctx.problem("llm", "no model for the agent: the deploy stage has no endpoint yet",
                                          "run the deploy stage first, or set llm.url"))
        out = ctx.out_dir
        spec_path = out / "spec.json"
        files = {str(spec_path): agentspec.spec_text(agentspec.build_spec(s, choice, ctx.chain.base_dir))}
        python = ctx.python(self.runtime)
        common = dict(stage=self.name, cwd=str(out), env=agentspec.worker_env(), runtime=self.runtime)
        jobs = []
        if s.questions:
            jobs.append(Job(name="run", argv=[*python, "-m", "agentrun", "run", "--spec", str(spec_path), "--out",
                                              str(out / TRANSCRIPTS), "--errors-in-output"],
                            files=files, expected_outputs=[str(out / TRANSCRIPTS)],
                            description=f"{s.agent} agent answers {len(s.questions)} question(s)", **common))
        if s.bench:
            tasks = agentspec._abs(s.bench, ctx.chain.base_dir)
            jobs.append(Job(name="bench", argv=[*python, "-m", "agentrun", "bench", "--spec", str(spec_path),
                                                "--tasks", str(tasks), "--out", str(out / BENCH),
                                                "--errors-in-output"],
                            files=files if not jobs else {}, expected_outputs=[str(out / BENCH)],
                            description=f"{s.agent} agent benchmark on {tasks.name}", **common))
        return jobs

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        outputs: dict[str, Artifact] = {}
        logs = {r.job.name: r.log for r in results}
        s = ctx.settings
        runs = bench = None
        if s.questions:
            runs = _read(ctx.out_dir / TRANSCRIPTS, logs.get("run"))
            _raise_on_error(runs, logs.get("run"))
        if s.bench:
            bench = _read(ctx.out_dir / BENCH, logs.get("bench"))
            _raise_on_error(bench, logs.get("bench"))
        if bench is not None:  # the summary table shows the first scalar: the bench's success rate
            metrics = bench.get("metrics") or {}
            ctx.metrics["bench_success_rate"] = metrics.get("success_rate")
            outputs["bench"] = AgentTranscript(path=str(ctx.out_dir / BENCH),
                                               meta={"metrics": metrics, "agent": s.agent})
        if runs is not None:
            summary = runs.get("summary") or {}
            ctx.metrics.update(summary)
            outputs["transcript"] = AgentTranscript(path=str(ctx.out_dir / TRANSCRIPTS),
                                                    meta={"summary": summary, "agent": s.agent})
        if bench is not None:
            ctx.metrics["bench"] = bench.get("metrics") or {}
        return outputs

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        s = ctx.settings
        outputs: dict[str, Artifact] = {}
        if s.questions:
            outputs["transcript"] = AgentTranscript(path=str(final_dir / TRANSCRIPTS))
        if s.bench:
            outputs["bench"] = AgentTranscript(path=str(final_dir / BENCH))
        return outputs


def _read(path: Path, log: str | None) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageFailed(Problem(f"agent: cannot read {path.name}: {exc}", hint=f"log: {log}")) from None
    if not isinstance(data, dict):
        raise StageFailed(Problem(f"agent: {path.name} is not a JSON object", hint=f"log: {log}"))
    return data


def _raise_on_error(data: dict, log: str | None) -> None:
    """A run that could not start, or a question the model never answered for an error, fails the stage."""
    if data.get("error"):
        raise StageFailed(Problem(f"agent: {data['error']}", hint=f"log: {log}"))
    items = data.get("transcripts") or [t.get("transcript", {}) for t in data.get("tasks") or []]
    errors = [t.get("error") for t in items if t.get("stop_reason") == "error"]
    if errors:
        raise StageFailed(Problem(f"agent: {len(errors)} of {len(items)} run(s) failed: {errors[0]}",
                                  hint=f"log: {log}"))


STAGE = AgentStage()
