"""`finetune.merge: false` for real: XTuner LoRA SFT on CPU leaves only a PEFT adapter, and that adapter
feeds the later stages — OpenCompass evaluates base + adapter (`peft_path`), and deploy either serves it
(LMDeploy `--adapters`, GPU; golden-tested in tests/deploy) or, on the CPU stand-in that serves whole
models only, stops with one error that names `stages.finetune.merge` and the fix.

One XTuner run (~1 min) and one OpenCompass run (two tiny models × one small file) in all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

from finetune.finetune_helpers import sft_rows, write_jsonl

pytestmark = pytest.mark.upstream

TIMEOUT = 1800
MCQ = [
    {"question": "What is 1 + 1?", "A": "2", "B": "3", "C": "4", "D": "5", "answer": "A"},
    {"question": "What is 2 + 2?", "A": "5", "B": "4", "C": "6", "D": "9", "answer": "B"},
]


def _ichain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_adapter_only_output_feeds_eval_and_deploy(tmp_path, tiny_model):
    peft = subprocess.run([str(runtime_python("opencompass")), "-c", "import peft"], capture_output=True, text=True)
    if peft.returncode != 0:
        pytest.fail("the opencompass runtime has no `peft` (its lock pins it since adapters are evaluated with "
                    "peft_path): run `ichain env sync opencompass`", pytrace=False)
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    quiz = write_jsonl(tmp_path / "quiz.jsonl", MCQ)
    workdir = tmp_path / "runs"
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"""name: adapters
workdir: {workdir}
device: cpu
model: {{path: {tiny_model}, chat_template: internlm2_chat}}
runtimes:
  overrides:
    xtuner: {{python: {runtime_python('xtuner')}}}
    opencompass: {{python: {runtime_python('opencompass')}}}
    serve-cpu: {{python: {runtime_python('serve-cpu')}}}
stages:
  finetune:
    data: {data}
    method: lora
    merge: false
    max_length: 128
    max_steps: 4
    save_interval: 2
    log_interval: 1
    lr: 0.05
    lora: {{r: 8, alpha: 16, dropout: 0.0}}
    verify_max_new_tokens: 4
  eval:
    custom: [{{path: {quiz}}}]
    limit: 2
    max_out_len: 4
    batch_size: 2
  deploy:
    port: 29391
""", encoding="utf-8")

    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rec = json.loads((workdir / "manifest.json").read_text())["stages"]["finetune"]
    assert rec["state"] == "done" and set(rec["outputs"]) == {"checkpoint", "adapter"}
    adapter = Path(rec["outputs"]["adapter"]["path"])
    assert adapter == workdir / "finetune" / "adapter" and rec["outputs"]["adapter"]["base_model"] == str(tiny_model)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert not (workdir / "finetune" / "model").exists()
    # the final check loaded base + adapter and generated with it
    verify = json.loads((workdir / "finetune" / "verify.json").read_text())
    assert verify["samples"] and 1 <= len(verify["samples"][0]["tokens"]) <= 4

    # deploy on CPU: the stand-in cannot apply an adapter → one located error, before anything starts
    for extra in (["--dry-run"], []):
        dep = _ichain("deploy", "serve", "-c", str(chain), *extra)
        assert dep.returncode == 2, dep.stdout + dep.stderr
        assert "chain.yaml:" in dep.stderr and "stages.finetune.merge" in dep.stderr
        assert "merge: true" in dep.stderr and "Traceback" not in dep.stderr
    assert not (workdir / ".services").exists()

    # eval: the base model and base + adapter, side by side, for real
    res = _ichain("eval", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    cfg = (workdir / "eval" / "opencompass_config.py").read_text()
    assert f"peft_path='{adapter}'" in cfg, cfg
    report = json.loads((workdir / "eval" / "report.json").read_text())
    by_model = {s["model"]: s for s in report["scores"]}
    assert set(by_model) == {"base", "finetuned"}, report
    for s in by_model.values():
        assert 0.0 <= s["score"] <= 100.0
    # the adapter really was applied: OpenCompass's log of the finetuned model's task shows PEFT loading it
    base_pred = json.loads((workdir / "eval" / by_model["base"]["predictions"]).read_text())
    tuned_pred = json.loads((workdir / "eval" / by_model["finetuned"]["predictions"]).read_text())
    assert [v["prediction"] for v in base_pred.values()] != [v["prediction"] for v in tuned_pred.values()]
