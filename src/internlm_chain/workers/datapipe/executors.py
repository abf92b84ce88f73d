"""Where shard tasks run. `local`: a process pool on this machine. `ray` / `slurm`: datatrove's
RayPipelineExecutor (rayexec.py) / SlurmPipelineExecutor run the same per-shard function, one task per
shard, with datatrove's completion files; our own per-shard markers make every task idempotent anyway.

Slurm: every map/decide becomes one job array chained to the previous one with `depends`
(afterok); `flush()` submits the chain, follows it with squeue and checks datatrove's completion
files. A re-run submits only what has no completion file (datatrove's `skip_completed`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .plan import RunConfig


class ShardTask:
    """Picklable callable: datatrove calls it as f(data, rank, world_size)."""

    def __init__(self, cfg_path: str, what, shards: list[dict] | None = None):
        self.cfg_path = cfg_path
        self.what = what
        self.shards = shards

    def __call__(self, data=None, rank: int = 0, world_size: int = 1):
        from .plan import RunConfig

        cfg = RunConfig.load(self.cfg_path)
        run_task(cfg, self.what, self.shards[rank] if self.shards is not None else None)
        return iter(())


def run_task(cfg: RunConfig, what, shard) -> None:
    from . import pipeline

    if what == "tokenize":
        from .tokenize import tokenize_shard

        tokenize_shard(cfg, shard)
    elif isinstance(what, tuple) and what[0] == "decide":
        shards = pipeline.list_shards(cfg.inputs)
        pipeline.decide(cfg, what[1], shards)
    else:
        pipeline.process_shard(cfg, what, shard)


def _pool_task(args):
    cfg_path, what, shard = args
    run_task(RunConfig.load(cfg_path), what, shard)


class LocalExecutor:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.cfg_path = os.path.join(cfg.out_dir, "pipeline.json")

    def map_shards(self, what, shards: list[dict]) -> None:
        jobs = [(self.cfg_path, what, s) for s in shards]
        if self.cfg.workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                _pool_task(j)
            return
        import multiprocessing as mp

        # fork: workers inherit imported modules; each builds its models once (per-process cache)
        with mp.get_context("fork").Pool(min(self.cfg.workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_pool_task, jobs):
                pass

    def single(self, kind: str, pass_no: int) -> None:
        run_task(self.cfg, (kind, pass_no), None)

    def flush(self) -> None:
        """Wait until everything handed over so far has run (local work already has)."""

    def close(self) -> None:
        """Release what the executor started (the ray executor's private Ray instance)."""


def _slurm_class():
    from datatrove.executor import SlurmPipelineExecutor

    class Slurm(SlurmPipelineExecutor):
        """No stats-merging job per array (our report does that), and no empty partition/qos lines."""

        def launch_merge_stats(self):
            pass

        def get_sbatch_args(self, max_array: int = 1) -> dict:
            args = super().get_sbatch_args(max_array)
            for key in ("partition", "qos"):
                if not args.get(key):
                    args.pop(key, None)
            return args

    Slurm.__module__, Slurm.__qualname__ = __name__, "SlurmExecutor"  # picklable by reference
    return Slurm


def __getattr__(name):  # the class exists only where datatrove does (lazy, for dill in the job)
    if name == "SlurmExecutor":
        cls = _slurm_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


class DatatroveExecutor(LocalExecutor):
    """Each map/single becomes one datatrove executor run; `datatrove-local` exists to test this path."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.previous = None
        self.pending: list = []
        self.n = 0

    def _executor(self, task: ShardTask, tasks: int, name: str):
        logging_dir = os.path.join(self.cfg.work, "datatrove", f"{self.n:02d}-{name}")
        self.n += 1
        kind = self.cfg.executor
        if kind == "slurm":
            s = dict(self.cfg.slurm)
            # the job activates this very runtime (launch_pickled_pipeline lives in its bin/)
            venv = s.get("venv_path") or os.path.join(sys.prefix, "bin", "activate")
            return __getattr__("SlurmExecutor")(
                pipeline=[task], tasks=tasks, logging_dir=logging_dir, job_name=f"ichain-data-{name}",
                time=s.get("time") or "24:00:00", partition=s.get("partition") or "",
                cpus_per_task=s.get("cpus_per_task") or 1, mem_per_cpu_gb=s.get("mem_per_cpu_gb") or 2,
                qos=s.get("qos") or "", sbatch_args=s.get("sbatch_args") or None, mail_type="NONE",
                venv_path=venv if os.path.exists(venv) else None, depends=self.previous,
                workers=self.cfg.workers or -1)
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline=[task], tasks=tasks, workers=max(1, self.cfg.workers),
                                     logging_dir=logging_dir, start_method="fork")

    def map_shards(self, what, shards: list[dict]) -> None:
        if not shards:
            return
        ex = self._executor(ShardTask(self.cfg_path, what, shards), len(shards), f"map-{what}")
        self._launch(ex)

    def single(self, kind: str, pass_no: int) -> None:
        ex = self._executor(ShardTask(self.cfg_path, (kind, pass_no), None), 1, f"{kind}-{pass_no}")
        self._launch(ex)

    def _launch(self, ex) -> None:
        if self.cfg.executor == "slurm":
            # jobs depend on each other (afterok); datatrove submits the chain from its last job
            self.previous = ex
            self.pending.append(ex)
            return
        ex.run()

    def flush(self) -> None:
        if not self.pending:
            return
        chain, self.pending, self.previous = self.pending, [], None
        chain[-1].launch_job()  # submits every not-yet-complete job of the chain, in order
        ids = [str(ex.job_id) for ex in chain if ex.job_id not in (None, -1)]
        from .pipeline import log

        log(f"slurm: {len(chain)} job arrays, submitted {', '.join(ids) or 'none (all complete)'}")
        _wait_slurm(ids)
        for ex in chain:
            missing = ex.get_incomplete_ranks()
            if missing:
                raise RuntimeError(f"slurm job {ex.job_name} (id {ex.job_id}) did not complete tasks {missing}; "
                                   f"logs: {ex.slurm_logs_folder}")


def _wait_slurm(ids: list[str], poll: float = 0.5) -> None:
    """Until none of the jobs is queued or running; a job whose dependency failed is cancelled."""
    while ids:
        res = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True,
                             text=True)
        if res.returncode and "Invalid job id" not in res.stderr:
            raise RuntimeError(f"squeue failed: {res.stderr.strip()}")
        rows = [line.split() for line in res.stdout.splitlines() if line.strip()]
        if not rows:
            return
        stuck = [r[0] for r in rows if len(r) > 2 and r[2] == "DependencyNeverSatisfied"]
        if stuck:
            subprocess.run(["scancel", *stuck], capture_output=True)
            raise RuntimeError(f"slurm jobs {', '.join(stuck)} can never start: a job they depend on failed")
        time.sleep(poll)


def make_executor(cfg: RunConfig):
    if cfg.executor == "local":
        return LocalExecutor(cfg)
    if cfg.executor == "ray":
        from .rayexec import RayExecutor

        return RayExecutor(cfg)
    return DatatroveExecutor(cfg)
