"""`ichain eval compare RUN_A RUN_B`: score deltas between two eval reports."""

from __future__ import annotations

import json
from pathlib import Path

from internlm_chain.errors import ChainError, Problem


def find_report(path: Path) -> Path:
    """A chain workdir (manifest.json → eval's report), an eval stage dir, or report.json itself."""
    if path.is_file():
        return path
    manifest = path / "manifest.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            report = data["stages"]["eval"]["outputs"]["report"]["path"]
        except (ValueError, KeyError, TypeError):
            raise ChainError(Problem(f"{manifest} records no finished eval stage",
                                     hint="run `ichain eval` in that chain first")) from None
        return Path(report)
    for candidate in (path / "report.json", path / "eval" / "report.json"):
        if candidate.exists():
            return candidate
    raise ChainError(Problem(f"{path}: no eval report found",
                             hint="pass a chain workdir (with manifest.json), an eval stage dir or a report.json"))


def load_report(path: Path) -> dict:
    report = find_report(path)
    if not report.exists():
        raise ChainError(Problem(f"{report} does not exist (was the run moved or cleaned?)"))
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ChainError(Problem(f"{report} is not valid JSON: {exc}")) from None
    if not isinstance(data, dict) or "scores" not in data:
        raise ChainError(Problem(f"{report} is not an eval report (no 'scores')"))
    return data


def compare_reports(a: dict, b: dict) -> list[dict]:
    """One row per (model, dataset, metric) present in either run; delta = B − A where both have it."""
    def index(report: dict) -> dict[tuple[str, str, str], float]:
        return {(s["model"], s["dataset"], s["metric"]): float(s["score"]) for s in report["scores"]}

    ia, ib = index(a), index(b)
    rows = []
    for key in list(ia) + [k for k in ib if k not in ia]:
        sa, sb = ia.get(key), ib.get(key)
        rows.append({"model": key[0], "dataset": key[1], "metric": key[2], "a": sa, "b": sb,
                     "delta": round(sb - sa, 4) if sa is not None and sb is not None else None})
    return rows


def compare_table(rows: list[dict], name_a: str, name_b: str):
    from rich.table import Table

    table = Table(title=f"eval compare: B − A  (A = {name_a}, B = {name_b})")
    for col in ("model", "dataset", "metric"):
        table.add_column(col)
    for col in ("A", "B", "Δ"):
        table.add_column(col, justify="right")

    def fmt(v):
        return "·" if v is None else f"{v:.2f}"

    for r in rows:
        d = r["delta"]
        delta = "·" if d is None else (f"[green]{d:+.2f}[/]" if d > 0 else f"[red]{d:+.2f}[/]" if d < 0 else "0.00")
        table.add_row(r["model"], r["dataset"], r["metric"], fmt(r["a"]), fmt(r["b"]), delta)
    return table
