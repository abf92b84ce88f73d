"""`ichain config validate|show|schema`."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Json, Sets

app = typer.Typer(help="Validate, show and describe chain files.", no_args_is_help=True)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Chain file."),
    sets: Sets = None,
    as_json: Json = False,
) -> None:
    """Check a chain file (schema, references, each stage's own rules); exit 2 listing every problem."""
    from internlm_chain.chain.validate import validate_chain
    from internlm_chain.cli.output import info, print_json, print_problems
    from internlm_chain.errors import ChainError

    try:
        loaded, problems = validate_chain(file, sets or [])
    except ChainError as exc:
        if not as_json:
            raise
        print_json({"valid": False, "problems": [p.to_dict() for p in exc.problems]})
        raise typer.Exit(2) from None
    if as_json:
        print_json({"valid": not problems, "problems": [p.to_dict() for p in problems],
                    "stages": loaded.config.enabled_stages()})
        raise typer.Exit(2 if problems else 0)
    if problems:
        print_problems(problems)
        raise typer.Exit(2)
    stages = ", ".join(loaded.config.enabled_stages()) or "none"
    info(f"{file}: valid (stages: {stages})")


@app.command()
def show(
    file: Path = typer.Argument(..., help="Chain file."),
    sets: Sets = None,
    resolved: bool = typer.Option(False, "--resolved", help="Include every default, as the stages see it."),
    as_json: Json = False,
) -> None:
    """Print the chain after includes, overrides and ${ENV} (with --resolved: with every default)."""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.config.loader import load_chain

    loaded = load_chain(file, sets or [])
    data = loaded.config.model_dump(mode="json") if resolved else loaded.doc.data
    if resolved:
        data["workdir"] = str(loaded.workdir)
    if as_json:
        print_json(data)
    else:
        import yaml

        out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(), markup=False)


@app.command()
def schema(markdown: bool = typer.Option(False, "--markdown", help="Markdown reference instead of JSON Schema.")) -> None:
    """JSON Schema of the chain file (for editors), or its Markdown reference (docs/config.md)."""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.config.schema import chain_json_schema, chain_markdown

    if markdown:
        out.print(chain_markdown(), markup=False)
    else:
        print_json(chain_json_schema())
