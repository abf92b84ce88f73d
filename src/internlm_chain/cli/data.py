"""`ichain data run|report|demo`: the corpus pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Json, StageRun, option_group, run_stage, stage_run_options, stage_verb

app = typer.Typer(help="Clean, filter, de-duplicate and tokenize a zh/en corpus.", no_args_is_help=True)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def flags_chain(inputs: list[Path], out: Path, languages: str | None, text_key: str | None, workers: int | None,
                executor: str | None, tokenizer: str | None, outputs: str | None):
    """An in-memory chain with only a data stage, its workdir hidden in OUT/.ichain (see `link_outputs`)."""
    from internlm_chain.config.loader import chain_from_document
    from internlm_chain.config.source import Located

    section: dict = {"inputs": [str(p.expanduser().resolve()) for p in inputs]}
    for key, value in (("languages", _csv(languages)), ("text_key", text_key), ("workers", workers),
                       ("executor", executor), ("outputs", _csv(outputs))):
        if value is not None:
            section[key] = value
    if tokenizer is not None:
        section["tokenizer"] = tokenizer if tokenizer == "train" else str(Path(tokenizer).expanduser().resolve())
    out = out.expanduser().resolve()
    data = {"name": "data", "workdir": str(out / WORKDIR), "device": "cpu", "stages": {"data": section}}
    return chain_from_document(Located(data, {}), out / "ichain-data.yaml")


WORKDIR = ".ichain"


def link_outputs(out: Path) -> None:
    """OUT/clean, OUT/report.json, … as the flags form promises, pointing into the published stage.

    The runner publishes `<workdir>/data` atomically (a re-run swaps the whole folder), so relative
    links into it stay valid and never show a half-written run.
    """
    published = out / WORKDIR / "data"
    for entry in sorted(published.iterdir()):
        link = out / entry.name
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            continue  # never replace a user's own file
        link.symlink_to(Path(WORKDIR) / "data" / entry.name)


@app.command("run")
@option_group("opts", stage_run_options)
def run(
    inputs: list[Path] = typer.Argument(None, help="Input files or directories.", show_default=False),
    out: Path = typer.Option(None, "-o", "--out", help="Output directory: OUT/clean, OUT/internevo, … ."),
    languages: str = typer.Option(None, "--languages", help="Languages to keep, e.g. zh,en."),
    text_key: str = typer.Option(None, "--text-key", help="Field holding the text (default: text)."),
    workers: int = typer.Option(None, "--workers", min=0, help="Parallel shard workers (0 = all cores)."),
    executor: str = typer.Option(None, "--executor", help="local | ray | slurm."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer directory, or 'train'."),
    outputs: str = typer.Option(None, "--outputs", help="Comma-separated: clean,internevo,xtuner."),
    opts: StageRun = None,
) -> None:
    """Run the data stage: flags form (INPUT… -o OUT) or the chain form (-c FILE)."""
    from internlm_chain.errors import ChainError, Problem

    if opts.config is not None:
        if inputs or out:
            raise ChainError(Problem("give either -c FILE or INPUT… -o OUT, not both"))
        stage_verb("data", opts)
        return
    if not inputs or out is None:
        raise ChainError(Problem("`ichain data run` needs INPUT… and -o OUT (or -c FILE)",
                                 hint="e.g. ichain data run corpus/ -o runs/data"))
    if opts.sets:
        raise ChainError(Problem("--set works with -c FILE only"))
    run_stage(flags_chain(inputs, out, languages, text_key, workers, executor, tokenizer, outputs), "data", opts)
    if not opts.dry_run:
        link_outputs(out.expanduser().resolve())


def find_report(out: Path) -> Path | None:
    for cand in (out / "report.json", out / "data" / "report.json", out / WORKDIR / "data" / "report.json"):
        if cand.exists():
            return cand
    return None


@app.command("report")
def report(out: Path = typer.Argument(..., help="The run's output directory (OUT or OUT/data)."),
           as_json: Json = False) -> None:
    """Print a finished run's summary: documents kept and dropped per step and reason."""
    import json

    from rich.table import Table

    from internlm_chain.cli.output import out as console
    from internlm_chain.cli.output import print_json
    from internlm_chain.errors import ChainError, Problem

    path = find_report(out)
    if path is None:
        raise ChainError(Problem(f"no report.json in {out} or {out / 'data'}", hint="run `ichain data run` first"))
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ChainError(Problem(f"{path}: not valid JSON ({exc})")) from None
    if as_json:
        print_json({k: v for k, v in rep.items() if k not in ("samples", "steps")})
        return
    console.print(f"documents in: {rep['docs_in']}   kept: {rep['docs_kept']}   malformed: {rep['malformed']}   "
                  f"review: {rep['review']}", markup=False)
    console.print("languages: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["languages"].items())), markup=False)
    table = Table(title="dropped per step")
    for col in ("step", "reason", "documents"):
        table.add_column(col)
    for step, reasons in rep["dropped_per_reason"].items():
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(step, reason, str(n))
    console.print(table)
    if rep.get("pii_masked"):
        console.print("PII masked: " + ", ".join(f"{k} {v}" for k, v in rep["pii_masked"].items()), markup=False)
    for k, v in (rep.get("outputs") or {}).items():
        console.print(f"{k}: {v}", markup=False)
    console.print(f"report: {path.with_suffix('.html')}", markup=False)


@app.command("demo")
def demo(out_dir: Path = typer.Argument(..., help="Where to write the demo corpus."),
         seed: int = typer.Option(0, "--seed"), docs: int = typer.Option(200, "--docs", min=10)) -> None:
    """Write a small deterministic zh+en demo corpus (duplicates, junk, PII, HTML, conversations)."""
    from internlm_chain.workers.datapipe.demo_corpus import write_demo

    typer.echo(write_demo(str(out_dir), seed=seed, n_docs=docs))
