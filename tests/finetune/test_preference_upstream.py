"""Real XTuner 0.2.0 preference training on CPU with the tiny model: LoRA DPO (convert + merge), full ORPO
full DPO and a full reward model, each for two steps, then the outputs loaded the way downstream stages load them;
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


def test_full_dpo_against_a_frozen_copy(tmp_path, tiny_model):
    rec = _run(tmp_path, tiny_model, """
mode: dpo
method: full
lr: 0.001
""")
    m = rec["metrics"]
    assert set(rec["outputs"]) == {"checkpoint", "model"}
    # step 1: the reference is a frozen copy of the policy, so the DPO loss is exactly ln 2; then it learns
    assert m["first_loss"] == pytest.approx(math.log(2), abs=1e-4) and m["final_loss"] < m["first_loss"]
    assert m["final_reward_margin"] > 0
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


LOAD_PREFERENCE_CONFIGS = r"""
import json, sys
from mmengine.config import Config
name = lambda t: t if isinstance(t, str) else getattr(t, "__name__", None) or str(t)
out = {}
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    m = cfg.model
    out[path.rsplit("/", 1)[-1]] = {
        "model": name(m.type), "ref_llm": "ref_llm" in m, "quant": "quantization_config" in m.llm,
        "optim": name(cfg.optim_wrapper.type), "dataset": name(cfg.train_dataloader.dataset.type),
        "collate": name(cfg.train_dataloader.collate_fn.type), "varlen": cfg.use_varlen_attn,
        "loss": m.get("loss_type"), "beta": m.get("beta"), "reward_token_id": m.get("reward_token_id"),
    }
print(json.dumps(out))
"""


def test_rendered_gpu_preference_configs_load_with_mmengine(tmp_path):
    """GPU-only variants (QLoRA ORPO, full DPO under ZeRO-3, a 7B reward model) load with mmengine's own
    loader as XTuner's train will load them."""
    from finetune.finetune_helpers import fake_7b_chat
    from internlm_chain.chain.planner import Planner
    from internlm_chain.config.loader import load_chain

    model = fake_7b_chat(tmp_path)
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))  # an epoch long enough for the default warm-up
    cases = {"dpo_lora": "mode: dpo\n    method: lora", "orpo_qlora": "mode: orpo\n    method: qlora",
             "dpo_full_zero3": "mode: dpo\n    method: full\n    deepspeed: zero3\n    preference: {loss_type: ipo}",
             "reward_full": "mode: reward\n    method: full"}
    paths = []
    for case, stage in cases.items():
        chain = tmp_path / f"{case}.yaml"
        chain.write_text(f"name: {case.replace('_', '-')}\nworkdir: {tmp_path}/{case}\ndevice: cuda\n"
                         f"model: {{path: {model}}}\nstages:\n  finetune:\n    data: {data}\n    {stage}\n")
        ctx, jobs = Planner(load_chain(chain)).plan("finetune")
        target = tmp_path / f"{case}.py"
        target.write_text(jobs[1].files[str(ctx.out_dir / "xtuner_config.py")], encoding="utf-8")
        paths.append(str(target))
    got = _in_runtime(LOAD_PREFERENCE_CONFIGS, *paths)
    common = {"optim": "AmpOptimWrapper", "dataset": "build_preference_dataset", "collate": "preference_collate_fn",
              "varlen": False}
    assert got["dpo_lora.py"] == {**common, "model": "DPO", "ref_llm": False, "quant": False, "loss": "sigmoid",
                                  "beta": 0.1, "reward_token_id": None}
    assert got["orpo_qlora.py"] == {**common, "model": "ORPO", "ref_llm": False, "quant": True, "loss": None,
                                    "beta": 0.1, "reward_token_id": None}
    assert got["dpo_full_zero3.py"] == {**common, "model": "DPO", "ref_llm": True, "quant": False, "loss": "ipo",
                                        "beta": 0.1, "reward_token_id": None}
    assert got["reward_full.py"] == {**common, "model": "RewardModel", "ref_llm": False, "quant": False,
                                     "loss": "focal", "beta": None, "reward_token_id": 92527}
