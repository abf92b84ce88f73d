"""`ichain report FILE -o report.html`."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Sets


def report(
    file: Path = typer.Argument(..., help="Chain file."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="Where to write the HTML page."),
    sets: Sets = None,
) -> None:
    """Write one self-contained HTML page for the chain's run: stages, plots, metrics, artifacts."""
    from internlm_chain.chain.manifest import write_atomic
    from internlm_chain.cli.output import info
    from internlm_chain.config.loader import load_chain
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.report.html import render_report

    loaded = load_chain(file, sets or [])
    if not (loaded.workdir / "manifest.json").exists():
        raise ChainError(Problem(f"no run recorded in {loaded.workdir}", hint=f"run `ichain run {file}` first"))
    write_atomic(output, render_report(loaded.workdir))
    info(f"wrote {output}")
