"""`ichain plan`: memory estimates against published figures, and the decision table."""

from __future__ import annotations

import pytest

from internlm_chain.plan.decide import recommend
from internlm_chain.plan.memory import GIB, activations, lora_params, serving, training
from internlm_chain.plan.shapes import PRESETS, parse_size, shape_for

S7 = PRESETS["internlm2-7b"]


def test_parse_size():
    assert parse_size("7B") == 7e9 and parse_size("1.8b") == 1.8e9 and parse_size("500M") == 5e8
    assert parse_size("7e9") == 7e9
    for bad in ("seven", "7X", "100"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_full_finetuning_is_16_bytes_per_parameter_before_activations():
    est = training(S7, "full", gpus=1)
    assert (est.weights + est.gradients + est.optimizer) / S7.params == pytest.approx(16.0)


def test_zero_stages_shard_what_the_zero_paper_says():
    n = 8
    base = training(S7, "full", n, zero=0)
    z1, z2, z3 = (training(S7, "full", n, zero=z) for z in (1, 2, 3))
    assert z1.optimizer == pytest.approx(base.optimizer / n) and z1.gradients == base.gradients
    assert z2.gradients == pytest.approx(base.gradients / n) and z2.weights == base.weights
    assert z3.weights == pytest.approx(base.weights / n)
    # ZeRO-3 on 64 GPUs: 16P/64 = 0.25 bytes per parameter of model states
    z3_64 = training(S7, "full", 64, zero=3)
    assert (z3_64.weights + z3_64.gradients + z3_64.optimizer) / S7.params == pytest.approx(0.25)


def test_lora_and_qlora_weights():
    lora = training(S7, "lora", 1)
    qlora = training(S7, "qlora", 1)
    adapters = lora_params(S7, 64)
    # r=64 on all projections of InternLM2-7B is on the order of 150M trainable parameters (≈2% of 7.7B)
    assert 1e8 < adapters < 2.5e8
    assert lora.weights == pytest.approx(2 * S7.params + 2 * adapters)
    # QLoRA's 4-bit base is about a quarter of LoRA's bf16 base (a little more: bf16 embeddings)
    assert 0.25 < (qlora.weights - 2 * adapters) / (2 * S7.params) < 0.4


def test_activation_checkpointing_saves_memory():
    assert activations(S7, 2048, 1, checkpointing=True) < activations(S7, 2048, 1, checkpointing=False) / 5


def test_serving_weights():
    assert serving(S7, 1).weights / GIB == pytest.approx(2 * S7.params / GIB)
    assert serving(S7, 2).weights == pytest.approx(serving(S7, 1).weights / 2)


@pytest.mark.parametrize(
    ("scenario", "size", "gpus", "mem", "tokens", "method", "stages"),
    [
        ("chat", "7B", 1, 80, None, None, ["eval", "deploy"]),
        ("domain", "7B", 8, 80, 5e7, "full", ["data", "finetune", "eval", "deploy"]),
        ("domain", "7B", 1, 80, 5e7, "lora", ["data", "finetune", "eval", "deploy"]),
        ("domain", "7B", 1, 24, 5e7, "qlora", ["data", "finetune", "eval", "deploy"]),
        ("domain", "20B", 1, 16, 5e7, None, ["eval", "deploy"]),
        ("agent", "7B", 1, 80, None, None, ["eval", "deploy", "agent"]),
        ("agent", "1.8B", 1, 80, 1e7, "full", ["data", "finetune", "eval", "deploy", "agent"]),
    ],
)
def test_decision_table(scenario, size, gpus, mem, tokens, method, stages):
    plan = recommend(scenario, shape_for(parse_size(size)), gpus, mem, tokens)
    assert plan.method == method and plan.stages == stages, plan.reasons


def test_large_data_means_continued_pretraining():
    assert recommend("domain", S7, 8, 80, 5e9).mode == "continue"
    assert recommend("domain", S7, 8, 80, 5e7).mode == "sft"


def test_serving_falls_back_to_tensor_parallel_then_awq():
    s20 = PRESETS["internlm2-20b"]
    assert recommend("chat", s20, 4, 80).serve_tp == 1
    plan = recommend("chat", s20, 4, 40)
    assert plan.serve_tp == 2 and not plan.serve_quantized
    plan = recommend("chat", s20, 1, 24)
    assert plan.serve_quantized


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario"):
        recommend("party", S7, 1, 80)


def test_cli_writes_a_chain_that_validates(capsys, tmp_path):
    from helpers import run_cli
    from internlm_chain.config.loader import load_chain

    out = tmp_path / "chain.yaml"
    r = run_cli(capsys, "plan", "--scenario", "domain", "--model-size", "7B", "--gpus", "8", "--gpu-mem", "80",
                "--data-tokens", "50M", "--model-path", "/models/internlm2-7b", "-o", out)
    assert r.code == 0, r.err
    loaded = load_chain(out, environ={"DOMAIN_DATA": "/d"})
    ft = loaded.config.stages.finetune
    assert (ft.method, ft.mode, ft.deepspeed, ft.launcher.nproc_per_node) == ("full", "sft", "zero2", 8)
    assert loaded.config.stages.agent is None and loaded.config.model.path == "/models/internlm2-7b"
    assert "full ZeRO-2" in out.read_text()
    r = run_cli(capsys, "plan", "-s", "domain", "-m", "7B", "-o", out)
    assert r.code == 2 and "already exists" in r.err


def test_cli_json_and_bad_size(capsys):
    import json

    from helpers import run_cli

    r = run_cli(capsys, "plan", "-s", "agent", "-m", "20B", "--gpus", "2", "--gpu-mem", "24", "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["stages"] == ["eval", "deploy", "agent"] and data["serve"]["awq"] is True
    r = run_cli(capsys, "plan", "-s", "chat", "-m", "huge")
    assert r.code == 2 and "not a model size" in r.err
