"""`ichain status FILE`: what the manifest says about each stage."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Json, Sets


def status(
    file: Path = typer.Argument(..., help="Chain file."),
    sets: Sets = None,
    as_json: Json = False,
) -> None:
    """Per stage: done / stale / failed / running / interrupted / pending, with the log of a failure."""
    from internlm_chain.chain.status import chain_status
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.config.loader import load_chain

    rows = chain_status(load_chain(file, sets or []))
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"status: {file}")
    from internlm_chain.cli.summary import key_metric, outputs_where

    for col in ("stage", "state", "duration", "key metric", "outputs", "detail"):
        table.add_column(col)
    for row in rows:
        dur = f"{row['duration_s']:.1f}s" if row.get("duration_s") is not None else ""
        table.add_row(row["stage"], row["state"], dur, key_metric(row.get("metrics") or {}),
                      outputs_where(list((row.get("outputs") or {}).values())), row.get("detail", ""))
    out.print(table)
