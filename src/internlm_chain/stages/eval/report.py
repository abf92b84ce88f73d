"""Read what OpenCompass wrote (summary csv, results json, logs) into one report; tell failures apart.

OpenCompass exits 0 when tasks fail. A task failed when the driver log has `<task> failed with code N`,
when a planned model×dataset pair has `-` in the summary, or when its results file is missing.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

TIMESTAMP = re.compile(r"^\d{8}_\d{6}$")
FAILED_LINE = re.compile(r"(OpenICL(Infer|Eval))\[([^\]]*)\] failed with code (-?\d+)")


@dataclass
class TaskFailure:
    phase: str  # infer | eval
    model: str
    dataset: str
    log: str
    code: int | None = None

    def render(self) -> str:
        if self.phase == "summary":
            return f"OpenCompass wrote no summary in {self.log} (the run stopped early; see the stage log)"
        code = f" (exit code {self.code})" if self.code is not None else ""
        return f"{self.phase} of {self.model} on {self.dataset} failed{code}; log: {self.log}"


def latest_run(work_dir: Path) -> Path | None:
    """OpenCompass puts each run in <work_dir>/<YYYYmmdd_HHMMSS>/ (reused runs keep their folder)."""
    if not work_dir.is_dir():
        return None
    runs = sorted(p for p in work_dir.iterdir() if p.is_dir() and TIMESTAMP.match(p.name))
    return runs[-1] if runs else None


def read_summary(run: Path) -> tuple[dict[tuple[str, str, str], str], dict[str, str]]:
    """{(dataset, metric, model): cell} from the newest summary csv (cells are strings, `-` = failed),
    and each dataset's mode (gen / ppl)."""
    files = sorted((run / "summary").glob("summary_*.csv"))
    cells: dict[tuple[str, str, str], str] = {}
    modes: dict[str, str] = {}
    if not files:
        return cells, modes
    with files[-1].open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        models = header[4:]
        for row in reader:
            if len(row) < 4:
                continue
            modes[row[0]] = row[3]
            for model, cell in zip(models, row[4:], strict=False):
                cells[(row[0], row[2], model)] = cell
    return cells, modes


def task_log(run: Path, phase: str, model: str, dataset: str) -> Path:
    return run / "logs" / phase / model / f"{dataset}.out"


def failures_from_driver_log(text: str, run: Path) -> list[TaskFailure]:
    found = []
    for m in FAILED_LINE.finditer(text):
        phase = "infer" if m.group(2) == "Infer" else "eval"
        first = m.group(3).split(",")[0]
        model, _, dataset = first.partition("/")
        found.append(TaskFailure(phase, model, dataset, str(task_log(run, phase, model, dataset)), int(m.group(4))))
    return found


def numeric_metrics(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k not in ("details", "type") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def expected_pairs(plan_doc: dict, modes: dict[str, str]) -> list[tuple[str, str]]:
    """Planned custom pairs, plus every built-in dataset row of the summary for the models given
    built-ins (chat models only the generative ones)."""
    pairs = [(m, d) for m, d in plan_doc["combos"]]
    custom = {d["abbr"] for d in plan_doc["datasets"] if d["kind"] == "custom"}
    for model, access in plan_doc.get("builtin_access", {}).items():
        for ds, mode in modes.items():
            if ds not in custom and (access == "all" or mode != "ppl"):
                pairs.append((model, ds))
    return pairs


def collect_scores(run: Path, plan_doc: dict, driver_log: str) -> tuple[list[dict], list[TaskFailure]]:
    """Scores of every planned pair, and the failures (each with the log that explains it)."""
    failures = failures_from_driver_log(driver_log, run)
    failed_pairs = {(f.model, f.dataset) for f in failures}
    summary, modes = read_summary(run)
    if not summary and not failures:
        return [], [TaskFailure("summary", "-", "-", str(run / "summary"))]
    combos = expected_pairs(plan_doc, modes)
    scores: list[dict] = []
    for model, dataset in combos:
        result_file = run / "results" / model / f"{dataset}.json"
        cells = {metric: cell for (ds, metric, mm), cell in summary.items() if ds == dataset and mm == model}
        result = None
        if result_file.exists():
            try:
                result = json.loads(result_file.read_text(encoding="utf-8"))
            except ValueError:
                result = None
        metrics = numeric_metrics(result) if isinstance(result, dict) else {}
        error = result.get("error") if isinstance(result, dict) else None
        if not metrics or error or any(c.strip() == "-" for c in cells.values()):
            if (model, dataset) not in failed_pairs and not _covered(failures, model, dataset, run):
                phase = "eval" if (run / "predictions" / model / f"{dataset}.json").exists() else "infer"
                log = task_log(run, phase, model, dataset)
                if not log.exists():  # tasks grouping several datasets log under their first one
                    logs = sorted((run / "logs" / phase / model).glob("*.out"))
                    log = logs[0] if logs else log
                failures.append(TaskFailure(phase, model, dataset, str(log)))
            continue
        predictions = run / "predictions" / model / f"{dataset}.json"
        for metric, value in metrics.items():
            scores.append({"model": model, "dataset": dataset, "metric": metric, "score": round(value, 4),
                           "predictions": str(predictions) if predictions.exists() else None,
                           "results": str(result_file)})
    return scores, failures


def _covered(failures: list[TaskFailure], model: str, dataset: str, run: Path) -> bool:
    """A failure already reported for a task that held this pair (grouped tasks name their first pair)."""
    return any(f.model == model for f in failures)


def render_table(report: dict, title: str = "eval scores"):
    """A Rich table: one row per dataset × metric, one column per model."""
    from rich.table import Table

    models = [m["abbr"] for m in report["models"]]
    table = Table(title=title)
    table.add_column("dataset")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for s in report["scores"]:
        rows.setdefault((s["dataset"], s["metric"]), {})[s["model"]] = s["score"]
    for (ds, metric), by_model in rows.items():
        table.add_row(ds, metric, *[f"{by_model[m]:.2f}" if m in by_model else "·" for m in models])
    return table
