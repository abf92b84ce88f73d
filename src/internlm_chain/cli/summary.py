"""The end-of-run table: stage, status, time, key metric, where the outputs are."""

from __future__ import annotations

import os
from pathlib import Path


def key_metric(metrics: dict) -> str:
    for key, value in metrics.items():
        if isinstance(value, (int, float, str)):
            return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
    return ""


def outputs_where(paths: list[str]) -> str:
    """One line for a stage's outputs: their common folder, plus any URLs."""
    files = [p for p in paths if p.startswith("/")]
    urls = sorted({p for p in paths if not p.startswith("/")})
    return ", ".join(([os.path.commonpath(files)] if files else []) + urls)


def print_summary(outcomes, workdir: Path, as_json: bool = False, chain_file: str = "FILE") -> None:
    from rich.table import Table

    from internlm_chain.cli.output import out, print_json

    if as_json:
        print_json({"workdir": str(workdir), "manifest": str(workdir / "manifest.json"), "stages": [
            {"stage": o.stage, "status": o.status, "duration_s": o.duration_s, "fingerprint": o.fingerprint,
             "outputs": {k: a.model_dump() for k, a in o.outputs.items()}, "metrics": o.metrics}
            for o in outcomes]})
        return
    table = Table(title="internlm-chain")
    for col in ("stage", "status", "time", "key metric", "outputs"):
        table.add_column(col)
    for o in outcomes:
        t = f"{o.duration_s:.1f}s" if o.duration_s is not None else ""
        where = outputs_where([a.path for a in o.outputs.values()])
        table.add_row(o.stage, o.status, t, key_metric(o.metrics), where)
    out.print(table)
    if outcomes and all(o.status.startswith("up to date") for o in outcomes):
        out.print("Nothing to do: every stage is up to date.")
    for o in outcomes:
        if o.status == "submitted":
            out.print(f"{o.stage} is submitted to Slurm: `ichain status {chain_file}` shows its jobs; "
                      f"`ichain run {chain_file}` collects it once they have finished.", markup=False)
    out.print(f"manifest: {workdir / 'manifest.json'}", markup=False)
