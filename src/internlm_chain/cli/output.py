"""Console helpers: results to stdout, messages and problems to stderr.

Plain messages and errors are written directly (no Rich import on the common path, and no chance of a
user's text being read as Rich markup); Rich consoles are created only when a table is printed.
"""

from __future__ import annotations

import json
import os
import sys

from internlm_chain.errors import Problem


class _LazyConsole:
    """A rich.console.Console built on first use (importing Rich costs tens of milliseconds)."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, soft_wrap=True, highlight=False)
        return getattr(self._console, name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def _red(text: str) -> str:
    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    return f"\033[1;31m{text}\033[0m" if colour else text


def print_problems(problems: list[Problem]) -> None:
    ordered = sorted(problems, key=lambda p: (p.file or "~", p.line or 0, p.path))
    for p in ordered:
        sys.stderr.write(f"{_red('error:')} {p.render()}\n")
    if len(ordered) > 1:
        sys.stderr.write(f"{len(ordered)} problems found.\n")
    sys.stderr.flush()


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def info(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
