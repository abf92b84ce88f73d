"""`executor: ray`: every pass over shards and every global decision is one run of datatrove's
RayPipelineExecutor (one Ray task per shard, or one task for a decision) — the same split as the
slurm path, so the outputs are those of the local executor.

address `local` starts a private single-machine Ray instance for this run only: loopback addresses
only, a bounded number of CPUs, no dashboard; it is shut down when the run ends. `auto` or
`host:port` joins a running cluster (the nodes must share the filesystem holding inputs and outputs
with this driver, as datatrove's completion files are read from here). Our `datapipe` package is
shipped to the workers with the runtime env (`py_modules`), so cluster nodes only need the runtime's
packages (same Ray and Python version as this runtime).
"""

from __future__ import annotations

import os
import re
import shutil
import socket

from .executors import DatatroveExecutor, ShardTask

# On Linux this makes Ray a single-node install: every address it picks (GCS, raylet, workers) is
# 127.0.0.1 instead of the host's routable address. Read when `ray` is first imported.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
GIB = 1 << 30


def local_cpus(ray_cfg: dict) -> int:
    """CPUs of the private instance: `local_cpus`, else the run's `workers`, else every core."""
    return int(ray_cfg.get("local_cpus") or ray_cfg.get("workers") or os.cpu_count() or 1)


def _auto_target() -> tuple[str, str]:
    """What ray.init("auto") will connect to, found the way Ray finds it: RAY_ADDRESS, else the address
    the last `ray start` on this machine recorded (it stays behind when a head dies or is killed)."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    record = os.path.join(tmp, "ray", "ray_current_cluster")
    try:
        with open(record, encoding="utf-8") as fh:
            return fh.read().strip(), record
    except OSError:
        return "", ""  # Ray then looks for a running head itself, or says it found none (at once)


def _check_reachable(address: str) -> None:
    """ray.init retries an unreachable GCS forever: fail in seconds instead, naming the address."""
    target, source = _auto_target() if address == "auto" else (address, "ray.address")
    m = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d+)", target)
    if not m:
        return
    host, port = m[1], int(m[2])
    if host in ("127.0.0.1", "localhost", "::1"):
        # a head started on loopback: without this Ray rewrites the address to the host's routable one
        os.environ[LOOPBACK_ONLY] = "0"
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise RuntimeError(f"ray: cannot reach the Ray cluster at {target} (from {source}: {exc}); is "
                           "`ray start --head` running there, and is this the GCS port it printed?") from None


class RayExecutor(DatatroveExecutor):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.ray_cfg = dict(cfg.ray)
        self.started = False

    # ---- the Ray connection ------------------------------------------------------------------------
    def _runtime_env(self) -> dict:
        tmp = os.path.join(self.cfg.work, "ray-tmp")
        os.makedirs(tmp, exist_ok=True)
        pkg = os.path.dirname(os.path.abspath(__file__))
        # TMPDIR: datatrove's Ray tasks write their logs under tempfile.gettempdir() before copying them
        # into the logging dir; keep them in this run's work dir, not in a /tmp shared with other runs
        return {"py_modules": [pkg], "env_vars": {"TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg",
                                                  "TMPDIR": tmp}}

    def _start(self) -> None:
        if self.started:
            return
        from .pipeline import log

        address = self.ray_cfg.get("address") or "local"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from this driver
        if address == "local":
            os.environ[LOOPBACK_ONLY] = "0"
        else:
            _check_reachable(address)
        try:
            import ray
        except ImportError:
            raise RuntimeError("executor ray: this runtime has no `ray` package (the data runtime's lock has it; "
                               "re-run `ichain env sync data`)") from None
        per_task_cpus = int(self.ray_cfg.get("cpus_per_task") or 1)
        per_task_mem = float(self.ray_cfg.get("memory_per_task_gb") or 2.0)
        if address == "local":
            cpus = local_cpus(self.ray_cfg)
            slots = max(1, cpus // per_task_cpus)
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            # Ray's reservable memory: enough for every CPU slot's task, never more than the machine has
            memory = int(min(slots * per_task_mem * GIB, total))
            ray.init(address="local", num_cpus=cpus, num_gpus=0, include_dashboard=False,
                     object_store_memory=256 << 20, _memory=memory, runtime_env=self._runtime_env(),
                     _node_ip_address="127.0.0.1")
            gcs = ray.get_runtime_context().gcs_address
            if not gcs.startswith("127.0.0.1:"):
                ray.shutdown()
                raise RuntimeError(f"ray: the local instance did not bind loopback only (GCS at {gcs})")
            log(f"ray: started a local instance, GCS at {gcs} ({cpus} CPUs, {memory / GIB:.1f} GiB for tasks)")
        else:
            ray.init(address=address, runtime_env=self._runtime_env())
            log(f"ray: connected to {address} ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        self.started = True
        fits = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= per_task_cpus
                and n["Resources"].get("memory", 0) >= per_task_mem * GIB]
        if not fits:
            msg = (f"ray: no node has {per_task_cpus} CPUs and {per_task_mem:g} GiB free for one task "
                   f"(ray.cpus_per_task, ray.memory_per_task_gb)")
            if address == "local":
                raise RuntimeError(msg)
            log(msg + "; waiting for the cluster to grow")

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
        # the tasks' scratch logs: datatrove copied each into its logging dir when the task ended
        shutil.rmtree(os.path.join(self.cfg.work, "ray-tmp"), ignore_errors=True)

    # ---- datatrove -----------------------------------------------------------------------------------
    def _executor(self, task: ShardTask, tasks: int, name: str):
        from datatrove.executor import RayPipelineExecutor

        logging_dir = os.path.join(self.cfg.work, "datatrove", f"{self.n:02d}-{name}")
        self.n += 1
        r = self.ray_cfg
        per_task_cpus = int(r.get("cpus_per_task") or 1)
        concurrent = int(r.get("workers") or 0)
        return RayPipelineExecutor(
            pipeline=[task], tasks=tasks, logging_dir=logging_dir, workers=concurrent or -1,
            cpus_per_task=per_task_cpus,
            mem_per_cpu_gb=float(r.get("memory_per_task_gb") or 2.0) / per_task_cpus)

    def _launch(self, ex) -> None:
        if not ex.get_incomplete_ranks():
            return  # a resumed run: datatrove's completion files say this step is done; no Ray needed
        self._start()
        ex.run()
        missing = ex.get_incomplete_ranks()
        if missing:
            raise RuntimeError(f"ray: tasks {missing} of {os.path.basename(ex.logging_dir.path)} did not complete; "
                               f"logs: {os.path.join(ex.logging_dir.path, 'logs')}")
