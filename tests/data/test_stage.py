"""The data stage's glue: settings validation (located errors before any work) and the planned Job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError
from internlm_chain.stages.registry import get_stage
from internlm_chain.workers.datapipe import spec
from internlm_chain.workers.datapipe.demo_corpus import write_demo

REPO = Path(__file__).resolve().parents[2]


def _chain(write_chain, tmp_path, stage_yaml: str):
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / "a.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    return write_chain(f"name: t\nworkdir: {tmp_path}/run\ndevice: cpu\nstages:\n  data:\n{stage_yaml}")


def _problems(path):
    from internlm_chain.chain.planner import Planner

    loaded = load_chain(path)
    planner = Planner(loaded)
    return get_stage("data").validate(planner.context("data"))


def test_unknown_step_is_located(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n    steps:\n      - name: langid\n      - name: dedupe\n")
    problems = _problems(path)
    assert len(problems) == 1
    p = problems[0]
    assert "unknown step 'dedupe'" in p.message and p.line == 9 and p.path == "stages.data.steps.1.name"


def test_unknown_and_mistyped_params_are_located(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n    steps:\n      - name: rules\n        params:\n"
                                         "          min_char: 10\n          max_digit_ratio: high\n")
    msgs = {p.path: (p.message, p.line) for p in _problems(path)}
    assert msgs["stages.data.steps.0.params.min_char"][1] == 10
    assert "has no parameter 'min_char'" in msgs["stages.data.steps.0.params.min_char"][0]
    assert "expected float" in msgs["stages.data.steps.0.params.max_digit_ratio"][0]


def test_missing_input_and_tokenizer(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    inputs: [corpus, nowhere.jsonl]\n")
    msgs = [p.render() for p in _problems(path)]
    assert len(msgs) == 1 and "chain.yaml:6: stages.data.inputs.1: input not found" in msgs[0], msgs
    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n    tokenizer: no-such-dir\n")
    msgs = [p.render() for p in _problems(path)]
    assert any("chain.yaml:7" in m and "no tokenizer.json" in m for m in msgs), msgs


def test_near_dedup_params_checked(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n    steps:\n      - name: dedup_near\n"
                                         "        params: {num_perm: 100, bands: 32}\n")
    assert any("power of two" in p.message for p in _problems(path))


def test_spec_defaults_are_valid():
    for name in spec.DEFAULT_STEPS:
        assert spec.check_step(name, spec.default_params(name)) == []
    assert spec.check_step("safety", {"pii": ["email", "iban"]})[0][0] == "params.pii"


def test_flags_dry_run_golden(tmp_path, golden):
    corpus = tmp_path / "corpus"
    write_demo(str(corpus), n_docs=20)
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "data", "run", str(corpus), "-o", str(tmp_path / "out"),
                          "--tokenizer", "train", "--workers", "2", "--dry-run", "--show-files"],
                         capture_output=True, text=True, env={"ICHAIN_CACHE": "/cache", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    text = "\n".join(line for line in res.stdout.splitlines() if "fingerprint" not in line) + "\n"
    golden.check("data/flags_dry_run.txt", text, {str(tmp_path): "<TMP>", str(REPO): "<REPO>"})


def test_flags_errors_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "data", "run", str(tmp_path / "missing"),
                          "-o", str(tmp_path / "out"), "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 2 and "input not found" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "data", "run", str(tmp_path), "-o",
                          str(tmp_path / "out"), "--executor", "spark", "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 2 and "executor" in res.stderr


def test_collect_rejects_a_run_without_report(write_chain, tmp_path):
    from internlm_chain.chain.planner import Planner

    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n")
    ctx = Planner(load_chain(path)).context("data", out_dir=tmp_path / "staging")
    with pytest.raises(ChainError, match="report.json"):
        get_stage("data").collect(ctx, [])


def test_predicted_outputs(write_chain, tmp_path):
    from internlm_chain.chain.planner import Planner

    path = _chain(write_chain, tmp_path, "    inputs: [corpus]\n    outputs: [clean, xtuner]\n")
    ctx = Planner(load_chain(path)).context("data")
    arts = get_stage("data").predict_outputs(ctx, tmp_path / "final")
    assert set(arts) == {"clean", "report", "xtuner", "sft"}
    assert arts["xtuner"].path.endswith("xtuner/pretrain.jsonl")
    plan = get_stage("data").plan(ctx)[0]
    cfg = json.loads(next(iter(plan.files.values())))
    assert [s["name"] for s in cfg["steps"]] == spec.DEFAULT_STEPS and cfg["tokenizer"] is None

