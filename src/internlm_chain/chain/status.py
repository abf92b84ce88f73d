"""Compare the manifest with the current chain file: which stages are done, stale, failed, pending."""

from __future__ import annotations

from internlm_chain.chain.manifest import Manifest
from internlm_chain.chain.workdir_lock import _alive
from internlm_chain.config.loader import LoadedChain
from internlm_chain.errors import ChainError


def chain_status(loaded: LoadedChain) -> list[dict]:
    from internlm_chain.chain.runner import ChainRunner

    runner = ChainRunner(loaded)
    manifest = Manifest.load(loaded.workdir)
    rows = []
    for stage in loaded.config.enabled_stages():
        rec = manifest.stages.get(stage)
        row = {"stage": stage, "state": "pending", "duration_s": None, "detail": ""}
        if rec is not None:
            row["duration_s"] = rec.duration_s
            row["state"] = rec.state
            if rec.state == "running" and rec.pid and not _alive(rec.pid):
                row["state"], row["detail"] = "interrupted", f"process {rec.pid} is gone"
            elif rec.state in ("failed", "interrupted"):
                row["detail"] = (rec.error or "") + (f" — log: {rec.logs[-1]}" if rec.logs else "")
            elif rec.state == "done":
                try:
                    _, _, current = runner._prepare(stage)
                except ChainError as exc:
                    current, row["detail"] = False, exc.problems[0].render()
                if not current:
                    row["state"] = "stale"
                    row["detail"] = row["detail"] or "inputs or settings changed since it ran"
        rows.append(row)
    return rows
