"""`--help` of every verb and sub-verb, pinned: a refactor of the CLI must not change a flag, a short name,
a default or a help text without the golden files changing with it (review, then pytest --update-golden)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden" / "unit" / "cli_help"

WIDTH = "120"

# Renders every help page in one process. Typer's Rich help reads the terminal's width and colour from the
# environment, so the child gets a fixed one (see `_env`) and writes into a buffer, never a terminal.
RENDER = """
import contextlib, io, json, sys
import typer.main
from internlm_chain.cli.app import app, main

def paths(cmd, path=()):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from paths(sub, (*path, name))

pages = {}
for path in paths(typer.main.get_command(app)):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            buf.write(f"[exit {exc.code}]" if exc.code else "")
    pages[" ".join(path)] = "\\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\\n")
json.dump(pages, sys.stdout)
"""


def _env() -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "SYSTEMROOT") if k in os.environ}
    return {**keep, "COLUMNS": WIDTH, "LINES": "50", "TERM": "dumb", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    res = subprocess.run([sys.executable, "-c", RENDER], capture_output=True, text=True, encoding="utf-8",
                         env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_every_help_page_renders(pages):
    # a page that failed (a usage error, an exception) would otherwise be pinned as golden
    assert len(pages) > 30
    for path, text in pages.items():
        assert text.lstrip().startswith("Usage: ichain") and "[exit" not in text, (path, text[:300])


def test_help_of_every_verb_matches_its_golden(pages, golden):
    by_verb: dict[str, list[str]] = {}
    for path, text in pages.items():
        by_verb.setdefault(path.split(" ")[0] or "ichain", []).append(f"$ ichain {path} --help".replace("  ", " ")
                                                                       + "\n" + text + "\n")
    assert {"ichain", "run", "data", "pretrain", "finetune", "eval", "deploy", "agent", "env"} <= set(by_verb)
    for verb, texts in by_verb.items():
        golden.check(f"unit/cli_help/{verb}.txt", "\n".join(texts))
    stale = {p.stem for p in GOLDEN_DIR.glob("*.txt")} - set(by_verb)
    assert not stale, f"golden help pages of verbs that no longer exist: {sorted(stale)}"
