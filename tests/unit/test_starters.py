"""Every starter chain `ichain init` ships validates and dry-runs once its paths point at real files."""

from __future__ import annotations

import json
import re

import pytest

from helpers import run_cli
from internlm_chain.starters import available_templates, template_text

# The 7B shape is all validation reads of a model folder; no weights are needed to plan.
MODEL_CONFIG = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "hidden_size": 4096,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "intermediate_size": 14336, "vocab_size": 92544, "max_position_embeddings": 32768}
PAIR_ROW = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}]}
SFT_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.fixture
def starter_env(tmp_path, monkeypatch):
    """Local stand-ins for what each starter asks the user to point at, by environment variable."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(MODEL_CONFIG), encoding="utf-8")
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}), encoding="utf-8")
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}", encoding="utf-8")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps(SFT_ROW) + "\n", encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    # enough pairs that an epoch has room for the starters' warm-up (unpacked pairs: one per row)
    pairs.write_text((json.dumps(PAIR_ROW) + "\n") * 100, encoding="utf-8")
    compass = tmp_path / "compass"
    for rel in ("gsm8k/train.jsonl", "gsm8k/test.jsonl"):
        (compass / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (compass / "data" / rel).write_text("", encoding="utf-8")
    for rel in ("ceval/formal_ceval/dev", "ceval/formal_ceval/val", "ceval/formal_ceval/test", "mmlu/dev", "mmlu/test"):
        (compass / "data" / rel).mkdir(parents=True, exist_ok=True)
    values = {"MODEL": model, "INTERNLM2_7B": model, "TOKENIZER": tokenizer, "CORPUS": corpus, "SFT_DATA": sft, "PREF_DATA": pairs,
              "COMPASS_DATA": compass, "SLURM_PARTITION": "gpu", "ICHAIN_WORKDIR": tmp_path / "runs",
              "ICHAIN_DEVICE": "cpu"}
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    return values


def test_there_are_starters_for_each_use():
    assert {"quickstart", "internlm2-7b-lora", "internlm2-7b-dpo", "internlm2-1.8b-pretrain-slurm", "eval-only",
            "deploy-agent"} <= set(available_templates())


@pytest.mark.parametrize("name", available_templates())
def test_starter_validates_and_dry_runs_after_init(name, starter_env, tmp_path, capsys):
    used = set(re.findall(r"\$\{(?!stages\.)([A-Za-z_][A-Za-z0-9_]*)", template_text(name)))
    assert used <= set(starter_env), f"give the test a stand-in for {sorted(used - set(starter_env))}"
    r = run_cli(capsys, "init", tmp_path / "proj", "--template", name)
    assert r.code == 0, r.err
    chain = tmp_path / "proj" / f"{name}.yaml"
    r = run_cli(capsys, "config", "validate", chain)
    assert r.code == 0, r.err
    r = run_cli(capsys, "run", chain, "--dry-run")
    assert r.code == 0, r.err
    assert "would run" in r.out
