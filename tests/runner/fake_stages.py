"""Cheap stages for the runner's tests and scripts/bench_runner.py, loaded through `plugin:`.

A chain file names one per stage, e.g. `stages: {pretrain: {plugin: fake_stages.py:NEEDS_DATA}}`.
Each runs one real process (this interpreter) that writes `result.txt` into the stage's directory:
the stage name, a hash of its settings and the content of its inputs, so a changed stage changes the
outputs its dependents read. Behaviour switches come from the environment at run time (never part of
a fingerprint, like a crash): FAKE_SLEEP_<STAGE>=seconds, FAKE_FAIL_<STAGE>=exit code,
FAKE_CHILD_<STAGE>=seconds (sleep in a child process, whose pid goes to child.pid).
"""

from __future__ import annotations

import sys

from internlm_chain.chain.artifacts import CleanCorpus
from internlm_chain.chain.fingerprint import stable_hash
from internlm_chain.chain.job import Job
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.base import Stage

SCRIPT = r"""
import os, subprocess, sys, time
out, stage, token, *inputs = sys.argv[1:]
key = stage.upper()
rank = os.environ.get("SLURM_PROCID", "0")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "attempts.txt"), "a") as fh:
    fh.write(f"{os.getpid()} rank={rank}\n")
print(f"{stage}: start (rank {rank})", flush=True)
if os.environ.get("FAKE_CHILD_" + key):
    child = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(float(sys.argv[1]))",
                              os.environ["FAKE_CHILD_" + key]])
    with open(os.path.join(out, "child.pid"), "w") as fh:
        fh.write(str(child.pid))
    child.wait()
time.sleep(float(os.environ.get("FAKE_SLEEP_" + key, "0")))
if os.environ.get("FAKE_FAIL_" + key):
    print(f"{stage}: failing on purpose", flush=True)
    sys.exit(int(os.environ["FAKE_FAIL_" + key]))
if rank == "0":
    text = f"{stage} {token}\n" + "".join(open(p).read() for p in inputs)
    with open(os.path.join(out, "result.txt"), "w") as fh:
        fh.write(text)
print(f"{stage}: done", flush=True)
"""


class EchoStage(Stage):
    runtime = None

    def __init__(self, needs: tuple[str, ...] = (), distributed: bool = False, slurm_launch: str = "torchrun"):
        self.needs = needs
        self.distributed = distributed
        self.slurm_launch = slurm_launch

    def plan(self, ctx):
        settings = ctx.settings.model_dump(mode="json", exclude={"launcher", "enabled"})
        inputs = [a.path for _, a in sorted(ctx.inputs.items())]
        return [Job(stage=ctx.stage, name="echo", argv=[sys.executable, "-c", SCRIPT, str(ctx.out_dir), ctx.stage,
                                                        stable_hash(settings)[:12], *inputs],
                    cwd=str(ctx.out_dir), distributed=self.distributed, slurm_launch=self.slurm_launch,
                    expected_outputs=[str(ctx.out_dir / "result.txt")], description="fake stage for tests")]

    def collect(self, ctx, results):
        result = ctx.out_dir / "result.txt"
        if not result.exists():
            raise StageFailed(Problem(f"{ctx.stage}: result.txt was not written", hint=f"log: {results[-1].log}"))
        ctx.metrics["lines"] = len(result.read_text().splitlines())
        return {"result": CleanCorpus(path=str(result))}

    def predict_outputs(self, ctx, final_dir):
        return {"result": CleanCorpus(path=str(final_dir / "result.txt"))}


class NeedsRuntimeStage(EchoStage):
    """Runs in the `xtuner` runtime, like the real finetune stage: fails early when it is not synced."""

    runtime = "xtuner"

    def plan(self, ctx):
        [job] = super().plan(ctx)
        return [job.model_copy(update={"argv": [*ctx.python("xtuner"), *job.argv[1:]], "runtime": "xtuner"})]


class ServiceStage(EchoStage):
    """Like deploy: its output is a running service; FAKE_SERVICE_DOWN=1 says the service has stopped."""

    service = True

    def is_current(self, ctx, record):
        import os

        return not os.environ.get("FAKE_SERVICE_DOWN")


class RejectingStage(EchoStage):
    """Its settings never validate: a mistake in the last stage of a chain."""

    def validate(self, ctx):
        return [ctx.problem("plugin", "rejected on purpose", "the runner must say so before any stage runs")]


ECHO = EchoStage()
REJECT_AFTER_DEPLOY = RejectingStage(("deploy",))
SERVICE = ServiceStage(("finetune",))
NEEDS_DATA = EchoStage(("data",))
NEEDS_PRETRAIN = EchoStage(("pretrain",))
NEEDS_FINETUNE = EchoStage(("finetune",))
NEEDS_EVAL = EchoStage(("eval",))
NEEDS_DEPLOY = EchoStage(("deploy",))
SRUN_TASKS = EchoStage(distributed=True, slurm_launch="srun")
XTUNER = NeedsRuntimeStage(("data",))
