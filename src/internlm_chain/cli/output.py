"""Console helpers: results to stdout, messages and problems to stderr."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from internlm_chain.errors import Problem

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def print_problems(problems: list[Problem]) -> None:
    ordered = sorted(problems, key=lambda p: (p.file or "~", p.line or 0, p.path))
    for p in ordered:
        err.print(f"[bold red]error:[/] {p.render()}", markup=True, highlight=False)
    if len(ordered) > 1:
        err.print(f"{len(ordered)} problems found.")


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def info(message: str) -> None:
    err.print(message, markup=False)
