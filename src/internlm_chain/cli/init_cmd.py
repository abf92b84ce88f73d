"""`ichain init DIR`: copy a starter chain file into DIR."""

from __future__ import annotations

from pathlib import Path

import typer


def init(
    directory: Path | None = typer.Argument(None, help="Where to write the chain file.", show_default=False),
    template: str = typer.Option("quickstart", "--template", "-t", help="Starter chain (see `--list`)."),
    list_: bool = typer.Option(False, "--list", help="List the starter chains and exit."),
) -> None:
    """Write a starter chain file (from the shipped examples) into DIR; never overwrites."""
    from internlm_chain.cli.output import info, out
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.starters import available_templates, template_files, template_summary, template_text

    names = available_templates()
    if list_:
        width = max(map(len, names), default=0)
        for name in names:
            out.print(f"{name:<{width}}  {template_summary(name)}", markup=False)
        return
    if directory is None:
        raise ChainError(Problem("missing DIR: where to write the chain file", path="DIR",
                                 hint="ichain init DIR [--template NAME]; `ichain init --list` shows the templates"))
    if template not in names:
        raise ChainError(Problem(f"no starter chain named '{template}'", path="--template",
                                 hint="choose one of: " + ", ".join(names)))
    target = directory / f"{template}.yaml"
    extras = {directory / "data" / f.name: f for f in template_files(template)}
    for path in (target, *extras):
        if path.exists():
            raise ChainError(Problem(f"{path} already exists; not overwriting it", hint="pick another DIR"))
    if directory.exists() and not directory.is_dir():
        raise ChainError(Problem(f"{directory} is not a directory"))
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(template_text(template), encoding="utf-8")
    for path, source in extras.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(source.read_bytes())
    info(f"wrote {target}; next: ichain config validate {target}")
