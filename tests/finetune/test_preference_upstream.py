"""Real XTuner 0.2.0 preference training on CPU with the tiny model: LoRA DPO (convert + merge), full ORPO
and a full reward model, each for two steps, then the outputs loaded the way downstream stages load them;
and a pair that cannot tokenise failing in the check job, before training, naming file, line and field.

Each run is about a minute on a shared 2-core machine (start-up of the five jobs dominates)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune.finetune_helpers import pair_rows, write_jsonl
from finetune.test_finetune_upstream import COMPARE, _chain, _ichain, _in_runtime, _manifest

pytestmark = pytest.mark.upstream

COMMON = """
max_length: 96
max_steps: 2
save_interval: 2
log_interval: 1
batch_size: 2
"""


def _run(tmp_path: Path, tiny_model: Path, stage: str) -> dict:
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    chain = _chain(tmp_path, tiny_model, f"data: {data}\n{COMMON}{stage}")
    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rec = _manifest(tmp_path)["stages"]["finetune"]
    assert rec["state"] == "done"
    m = rec["metrics"]
    assert m["steps"] == 2 and all(math.isfinite(p[1]) for p in m["loss_curve"])
    return rec


def test_lora_dpo_convert_merge_generate(tmp_path, tiny_model):
    rec = _run(tmp_path, tiny_model, """
mode: dpo
method: lora
lr: 0.01
lora: {r: 8, alpha: 16, dropout: 0.0}
preference: {beta: 0.1}
verify_max_new_tokens: 4
""")
    m, out = rec["metrics"], tmp_path / "runs" / "finetune"
    # step 1: the LoRA B matrices start at zero, so policy == reference and the DPO loss is exactly ln 2
    assert m["first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert m["final_loss"] < m["first_loss"]
    assert 0.0 <= m["final_reward_acc"] <= 1.0 and math.isfinite(m["final_reward_margin"])
    assert {k: rec["outputs"][k]["kind"] for k in rec["outputs"]} == {
        "checkpoint": "XTunerCheckpoint", "adapter": "Adapter", "model": "HFModel"}
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert 1 <= len(json.loads((out / "verify.json").read_text())["samples"][0]["tokens"]) <= 4
    # trained on the tokenizer's own template (ChatML here), which is kept and matches internlm2_chat
    assert m["chat_template"] == {"name": "internlm2_chat", "kept_existing": True, "matches_xtuner_template": True}
    cmp = _in_runtime(COMPARE, str(out / "model"), str(tiny_model))
    assert cmp["keys_equal"] and cmp["max_abs_diff"] > 1e-4
    assert cmp["prompt"] == "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_full_orpo(tmp_path, tiny_model):
    rec = _run(tmp_path, tiny_model, """
mode: orpo
method: full
lr: 0.001
preference: {beta: 0.1}
""")
    m = rec["metrics"]
    assert set(rec["outputs"]) == {"checkpoint", "model"}
    # ORPO = NLL of the chosen reply - beta * log-sigmoid(log odds): both logged, both finite
    assert math.isfinite(m["final_nll_loss"]) and math.isfinite(m["final_log_odds_ratio"])
    assert m["final_loss"] == pytest.approx(m["final_nll_loss"] - 0.1 * m["final_log_odds_ratio"], rel=1e-3)
    cmp = _in_runtime(COMPARE, rec["outputs"]["model"]["path"], str(tiny_model))
    assert cmp["keys_equal"] and cmp["max_abs_diff"] > 1e-5


LOAD_REWARD = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification
m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
print(json.dumps({"cls": type(m).__name__, "labels": m.config.num_labels,
                  "token": m.config.reward_token_id, "head": list(m.score.weight.shape),
                  "head_norm": m.score.weight.norm().item()}))
"""


def test_full_reward_model_scores_pairs(tmp_path, tiny_model):
    rec = _run(tmp_path, tiny_model, """
mode: reward
method: full
lr: 0.001
preference: {reward_token_id: 8, reward_loss: ranking}
""")
    m = rec["metrics"]
    assert set(rec["outputs"]) == {"checkpoint", "reward_model"}
    art = rec["outputs"]["reward_model"]
    assert art["kind"] == "RewardModel" and art["meta"]["reward_token_id"] == 8
    check = m["reward_check"]
    assert check["pairs"] == 8 and check["model_class"] == "LlamaForSequenceClassification"
    assert math.isfinite(check["chosen_mean"]) and math.isfinite(check["rejected_mean"])
    assert 0.0 <= m["final_acc"] <= 1.0
    # the value head trained (it starts at zero) and survived the conversion
    got = _in_runtime(LOAD_REWARD, art["path"])
    assert got["labels"] == 1 and got["token"] == 8 and got["head"] == [1, 64] and got["head_norm"] > 0


def test_pair_that_does_not_tokenise_fails_before_training(tmp_path, tiny_model):
    rows = pair_rows(6)
    rows[4]["prompt"][-1]["content"] = " ".join(["word"] * 200)  # the prompt alone fills max_length
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    chain = _chain(tmp_path, tiny_model, f"data: {data}\nmode: dpo\nmax_length: 64\nmax_steps: 1")
    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert f"{data}:5: field 'prompt': is " in text and "at least max_length (64)" in text
    assert "stages.finetune.data" in text
    assert not (tmp_path / "runs" / ".staging" / "finetune" / "work_dir").exists()
    assert "check-data" in text  # the check job in the runtime found it
