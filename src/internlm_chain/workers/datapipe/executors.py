"""Where shard tasks run. `local`: a process pool on this machine. `ray` / `slurm`: datatrove's
RayPipelineExecutor / SlurmPipelineExecutor run the same per-shard function, one task per shard,
with datatrove's completion files; our own per-shard markers make every task idempotent anyway.
"""

from __future__ import annotations

import os

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


class DatatroveExecutor(LocalExecutor):
    """Each map/single becomes one datatrove executor run; `datatrove-local` exists to test this path."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.previous = None
        self.n = 0

    def _executor(self, task: ShardTask, tasks: int, name: str):
        logging_dir = os.path.join(self.cfg.work, "datatrove", f"{self.n:02d}-{name}")
        self.n += 1
        kind = self.cfg.executor
        if kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            s = dict(self.cfg.slurm)
            return SlurmPipelineExecutor(
                pipeline=[task], tasks=tasks, logging_dir=logging_dir, job_name=f"ichain-data-{name}",
                time=s.get("time") or "24:00:00", partition=s.get("partition") or "cpu",
                cpus_per_task=s.get("cpus_per_task") or 1, mem_per_cpu_gb=s.get("mem_per_cpu_gb") or 2,
                qos=s.get("qos") or "normal", sbatch_args=s.get("sbatch_args") or None,
                venv_path=s.get("venv_path"), depends=self.previous, workers=self.cfg.workers or -1)
        if kind == "ray":
            from datatrove.executor import RayPipelineExecutor

            r = dict(self.cfg.ray)
            return RayPipelineExecutor(pipeline=[task], tasks=tasks, logging_dir=logging_dir,
                                       workers=self.cfg.workers or -1, cpus_per_task=r.get("cpus_per_task", 1),
                                       mem_per_cpu_gb=r.get("mem_per_cpu_gb", 2))
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
            # Slurm jobs depend on each other (afterok) and datatrove submits the chain lazily from
            # the last one; the driver itself then waits for the final marker (see pipeline.run).
            self.previous = ex
            return
        ex.run()


def make_executor(cfg: RunConfig):
    if cfg.executor == "local":
        return LocalExecutor(cfg)
    return DatatroveExecutor(cfg)
