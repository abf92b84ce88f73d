"""Compare the manifest with the current chain file: which stages are done, stale, failed, pending.

Stages submitted to Slurm (`slurm.wait: false`) are looked up in Slurm: still queued/running, finished
(`ichain run` collects them), or failed with the job's exit code.
"""

from __future__ import annotations

from internlm_chain.chain.manifest import StageRecord
from internlm_chain.config.loader import LoadedChain
from internlm_chain.errors import ChainError
from internlm_chain.procs import pid_alive


def _slurm_row(rec: StageRecord, row: dict, chain_file: str) -> None:
    from internlm_chain.launch.slurm import job_state

    try:
        states = [(job_id, job_state(job_id)) for job_id in rec.slurm_jobs]
    except ChainError as exc:  # no Slurm client here
        row["detail"] = f"slurm jobs {', '.join(rec.slurm_jobs)}: {exc.problems[0].message}"
        return
    row["slurm"] = {job_id: st.state for job_id, st in states}
    for job_id, st in states:
        if st.finished and st.stage_state != "done":
            row["state"] = "failed" if st.stage_state == "failed" else "interrupted"
            code = f", exit code {st.returncode}" if st.returncode is not None else ""
            row["detail"] = f"slurm job {job_id} {st.state}{code}" + (f" — log: {rec.logs[-1]}" if rec.logs else "")
            return
    pending = [f"{job_id} {st.state}" for job_id, st in states if not st.finished]
    if pending:
        row["detail"] = "slurm job " + ", ".join(pending)
    else:
        row["state"] = "finished"
        row["detail"] = f"slurm jobs done; `ichain run {chain_file}` collects the outputs"


def chain_status(loaded: LoadedChain) -> list[dict]:
    from internlm_chain.chain.runner import ChainRunner

    runner = ChainRunner(loaded)
    manifest = runner.manifest
    rows = []
    redo: set[str] = set()  # stages that will run again: their dependents will too
    for stage in loaded.config.enabled_stages():
        rec = manifest.stages.get(stage)
        row = {"stage": stage, "state": "pending", "duration_s": None, "detail": ""}
        if rec is not None:
            row["duration_s"] = rec.duration_s
            row["metrics"] = rec.metrics
            row["outputs"] = {k: a.path for k, a in rec.outputs.items()}
            row["state"] = rec.state
            if rec.state == "running" and rec.pid and not pid_alive(rec.pid):
                row["state"], row["detail"] = "interrupted", f"process {rec.pid} is gone"
            elif rec.state == "running":
                row["detail"] = f"pid {rec.pid}"
            elif rec.state == "submitted":
                _slurm_row(rec, row, str(loaded.path))
            elif rec.state in ("failed", "interrupted"):
                row["detail"] = (rec.error or "") + (f" — log: {rec.logs[-1]}" if rec.logs else "")
            elif rec.state == "done":
                fp = ""
                try:
                    _, fp, current = runner._prepare(stage)
                except ChainError as exc:
                    current, row["detail"] = False, exc.problems[0].render()
                upstream = [d for d in runner.planner.dependencies(stage) if d in redo]
                if upstream and current:
                    current, row["detail"] = False, f"`{upstream[0]}` will run again first"
                if not current and not upstream and runner.is_stopped_service(stage, fp, rec):
                    row["state"] = "stopped"
                    row["detail"] = f"server not running; `ichain {stage} serve -c FILE` restarts it"
                elif not current:
                    row["state"] = "stale"
                    row["detail"] = row["detail"] or "inputs or settings changed since it ran"
        if row["state"] not in ("done", "stopped"):
            redo.add(stage)
        rows.append(row)
    return rows
