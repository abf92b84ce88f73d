"""Reading OpenCompass outputs into a report, and telling failures apart (no upstream code).

The folders here follow the layout OpenCompass 0.5.4 writes (measured in tests/eval/test_upstream.py):
<run>/{summary/summary_<ts>.csv, results/<model>/<dataset>.json, predictions/…, logs/{infer,eval}/…}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from internlm_chain.stages.eval.compare import compare_reports, load_report
from internlm_chain.stages.eval.report import collect_scores, failures_from_driver_log, latest_run


def fake_run(root: Path, summary: str, results: dict[tuple[str, str], dict]) -> Path:
    run = root / "20260101_120000"
    (run / "summary").mkdir(parents=True)
    (run / "summary" / "summary_20260101_120000.csv").write_text(summary)
    for (model, ds), data in results.items():
        for sub in ("results", "predictions"):
            (run / sub / model).mkdir(parents=True, exist_ok=True)
        (run / "results" / model / f"{ds}.json").write_text(json.dumps(data))
        (run / "predictions" / model / f"{ds}.json").write_text("{}")
    (root / "20250101_000000").mkdir()  # an older run: never picked
    return run


PLAN = {"combos": [["chat", "quiz"], ["base", "quiz_ppl"]], "builtin_access": {"chat": "gen", "base": "all"},
        "datasets": [{"abbr": "quiz", "kind": "custom"}, {"abbr": "quiz_ppl", "kind": "custom"},
                     {"abbr": "gsm8k_gen", "kind": "builtin"}]}


def test_scores_from_results_and_builtin_rows(tmp_path):
    summary = ("dataset,version,metric,mode,chat,base\nquiz,1,accuracy,gen,66.67,-\n"
               "quiz_ppl,1,accuracy,ppl,-,33.33\ngsm8k,2,accuracy,gen,50.00,0.00\n")
    run = fake_run(tmp_path, summary, {
        ("chat", "quiz"): {"accuracy": 66.666, "details": []}, ("base", "quiz_ppl"): {"accuracy": 33.333},
        ("chat", "gsm8k"): {"accuracy": 50.0}, ("base", "gsm8k"): {"accuracy": 0.0}})
    assert latest_run(tmp_path) == run
    scores, failures = collect_scores(run, PLAN, "")
    assert failures == []
    got = {(s["model"], s["dataset"]): s["score"] for s in scores}
    # the `-` cells of pairs that were never planned (chat × quiz_ppl) are not failures
    assert got == {("chat", "quiz"): 66.666, ("base", "quiz_ppl"): 33.333, ("chat", "gsm8k"): 50.0,
                   ("base", "gsm8k"): 0.0}


def test_dash_cell_of_a_planned_pair_is_a_failure_naming_its_log(tmp_path):
    summary = "dataset,version,metric,mode,chat,base\nquiz,1,accuracy,gen,-,-\nquiz_ppl,1,accuracy,ppl,-,10\n"
    run = fake_run(tmp_path, summary, {("base", "quiz_ppl"): {"accuracy": 10.0}})
    (run / "logs" / "infer" / "chat").mkdir(parents=True)
    (run / "logs" / "infer" / "chat" / "quiz.out").write_text("Traceback ...")
    scores, failures = collect_scores(run, {**PLAN, "builtin_access": {}}, "")
    assert [(f.phase, f.model, f.dataset) for f in failures] == [("infer", "chat", "quiz")]
    assert failures[0].log == str(run / "logs" / "infer" / "chat" / "quiz.out")
    assert [s["dataset"] for s in scores] == ["quiz_ppl"]


def test_failed_with_code_lines_name_the_task_log(tmp_path):
    log = ("Current exp folder: x\n11/29 - OpenCompass - ERROR - OpenICLInfer[chat/quiz,chat/gsm8k] failed with code 1\n"
           "OpenICLEval[base/quiz_ppl] failed with code -9\n")
    failures = failures_from_driver_log(log, tmp_path)
    assert [(f.phase, f.model, f.dataset, f.code) for f in failures] == [
        ("infer", "chat", "quiz", 1), ("eval", "base", "quiz_ppl", -9)]
    assert failures[0].render().endswith(f"log: {tmp_path}/logs/infer/chat/quiz.out")


def test_no_summary_is_a_failure(tmp_path):
    run = tmp_path / "20260101_120000"
    run.mkdir()
    scores, failures = collect_scores(run, PLAN, "")
    assert scores == [] and "no summary" in failures[0].render()


def report(scores):
    return {"models": [], "scores": [{"model": m, "dataset": d, "metric": "accuracy", "score": s} for m, d, s in scores]}


def test_compare_deltas_and_cli(tmp_path):
    a = report([("base", "gsm8k", 10.0), ("sft", "gsm8k", 20.0)])
    b = report([("base", "gsm8k", 10.0), ("sft", "gsm8k", 35.5), ("sft", "quiz", 50.0)])
    rows = compare_reports(a, b)
    assert [(r["model"], r["dataset"], r["delta"]) for r in rows] == [
        ("base", "gsm8k", 0.0), ("sft", "gsm8k", 15.5), ("sft", "quiz", None)]
    # RUN_A as a chain workdir (manifest → report path), RUN_B as a report.json
    (tmp_path / "a" / "eval").mkdir(parents=True)
    (tmp_path / "a" / "eval" / "report.json").write_text(json.dumps(a))
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({"stages": {"eval": {"outputs": {"report": {
        "kind": "EvalReport", "path": str(tmp_path / "a" / "eval" / "report.json")}}}}}))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert load_report(tmp_path / "a") == a
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "eval", "compare", str(tmp_path / "a"),
                          str(tmp_path / "b.json")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "+15.50" in res.stdout and "sft" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "internlm_chain", "eval", "compare", str(tmp_path / "a"),
                          str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no eval report found" in bad.stderr and "Traceback" not in bad.stderr


def test_flags_form_dry_run_and_bad_flags(tmp_path, mcq_jsonl):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "eval", "--model", str(model), "--model", str(model),
                          "--custom", str(mcq_jsonl), "--limit", "2", "--device", "cpu", "--dry-run",
                          "--runtime-python", "/opt/py/bin/python", "-o", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "opencompass.cli.main" in res.stdout and "/opt/py/bin/python" in res.stdout
    assert not (tmp_path / "out").exists()  # a dry-run writes nothing
    bad = subprocess.run([sys.executable, "-m", "internlm_chain", "eval", "--endpoint", "http://127.0.0.1:1/v1",
                          "--custom", str(mcq_jsonl)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--served-name" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "internlm_chain", "eval", "--model", str(model), "--custom",
                              str(tmp_path / "nope.jsonl"), "--dry-run", "-o", str(tmp_path / "o2")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and f"dataset file not found: {tmp_path}/nope.jsonl" in missing.stderr
