"""Every bad input to `ichain model …` is one error naming the flag, exit 2, before anything runs — and
`inspect`'s parameter count from config.json is exact for published Llama/InternLM2/Qwen2 layouts."""

from __future__ import annotations

import json

import pytest

from internlm_chain.models.inspect_model import config_parameters, inspect_model
from model.model_helpers import fake_adapter, fake_model, write_safetensors

PY = ["--python", "/opt/xtuner/bin/python"]


def _only_error(err: str, flag: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err
    assert "Traceback" not in err


def test_merge_errors_name_the_flag(run, tmp_path):
    base = fake_model(tmp_path)
    good = fake_adapter(tmp_path, str(base))
    cases = [
        (["--adapter", str(tmp_path / "nope")], "--adapter", "not found"),
        (["--adapter", str(base)], "--adapter", "whole model"),
        (["--adapter", str(fake_adapter(tmp_path, str(tmp_path / "gone"), "orphan"))], "--base", "not a local"),
        (["--adapter", str(fake_adapter(tmp_path, "internlm/internlm2-7b", "hub"))], "--base", "internlm/internlm2"),
        (["--adapter", str(good), "--base", str(tmp_path / "nope")], "--base", "not found"),
        (["--adapter", str(good), "--base", str(good)], "--base", "pass it as --adapter"),
        (["--adapter", str(good), "--dtype", "fp8"], "--dtype", "not a dtype"),
        (["--adapter", str(good), "--device", "tpu"], "--device", "not a device"),
    ]
    for args, flag, text in cases:
        code, out, err = run("model", "merge", *args, "-o", str(tmp_path / "out"), *PY)
        assert code == 2, (args, err)
        _only_error(err, flag)
        assert text in err, (args, err)
    (tmp_path / "taken").mkdir()
    code, _, err = run("model", "merge", "--adapter", str(good), "-o", str(tmp_path / "taken"), *PY)
    assert code == 2
    _only_error(err, "--out")
    code, _, err = run("model", "merge", "--adapter", str(good), "-o", str(good / "merged"), *PY)
    assert code == 2 and "inside an input folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base", "hub", "orphan", "taken"]


def test_missing_runtime_is_an_input_error(run, tmp_path):
    base = fake_model(tmp_path)
    adapter = fake_adapter(tmp_path, str(base))
    code, _, err = run("model", "merge", "--adapter", str(adapter), "-o", str(tmp_path / "out"), "--device", "cpu",
                       "--python", str(tmp_path / "no-python"))
    assert code == 2
    _only_error(err, "--python")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_convert_errors_name_the_flag(run, tmp_path):
    pth = tmp_path / "iter_2.pth"
    pth.write_bytes(b"x")
    cfg = tmp_path / "xtuner_config.py"
    cfg.write_text(f"pretrained_model_name_or_path = '{tmp_path}/missing-base'\n")
    ok_cfg = tmp_path / "ok_config.py"
    ok_cfg.write_text(f"pretrained_model_name_or_path = '{fake_model(tmp_path)}'\n")
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        ([str(tmp_path / "iter_9.pth"), "-c", str(ok_cfg)], "CHECKPOINT", "not found"),
        ([str(tmp_path / "notes.txt"), "-c", str(ok_cfg)], "CHECKPOINT", "not a .pth"),
        ([str(tmp_path), "-c", str(ok_cfg)], "CHECKPOINT", "not a DeepSpeed"),
        ([str(pth), "-c", str(tmp_path / "none.py")], "--config", "not found"),
        ([str(pth), "-c", str(tmp_path / "notes.txt")], "--config", "python config"),
        ([str(pth), "-c", str(cfg)], "--config", "base model is missing"),
    ]
    for args, flag, text in cases:
        code, _, err = run("model", "convert", *args, "-o", str(tmp_path / "out"), *PY)
        assert code == 2, (args, err)
        _only_error(err, flag)
        assert text in err, (args, err)
    code, _, err = run("model", "convert", str(pth), "-c", str(ok_cfg), "-o", str(tmp_path / "base"), *PY)
    assert code == 2
    _only_error(err, "--out")


def test_chat_errors_name_the_flag(run, tmp_path):
    base = fake_model(tmp_path)
    cases = [
        ([str(tmp_path / "nope")], "MODEL", "not found"),
        ([str(fake_adapter(tmp_path, str(base)))], "MODEL", "pass it as --adapter"),
        ([str(base), "--adapter", str(base)], "--adapter", "whole model"),
        ([str(base), "--template", "chatml"], "--template", "not an XTuner prompt template"),
        ([str(base), "--max-new-tokens", "0"], "--max-new-tokens", "not a positive"),
        ([str(base), "--temperature", "-1"], "--temperature", "negative"),
    ]
    for args, flag, text in cases:
        code, _, err = run("model", "chat", *args, *PY)
        assert code == 2, (args, err)
        _only_error(err, flag)
        assert text in err, (args, err)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    code, _, err = run("model", "chat", str(empty), *PY)
    assert code == 2 and "no weights" in err


def test_inspect_errors(run, tmp_path):
    code, _, err = run("model", "inspect", str(tmp_path / "nope"))
    assert code == 2
    _only_error(err, "PATH")
    code, _, err = run("model", "inspect", str(tmp_path))
    assert code == 2 and "neither a model" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    code, _, err = run("model", "inspect", str(bad))
    assert code == 2 and "not valid JSON" in err


# Published parameter counts of released checkpoints (their model cards / safetensors index totals).
@pytest.mark.parametrize("cfg,expected", [
    ({"model_type": "internlm2", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 92544, "bias": False}, 7_737_708_544),
    ({"model_type": "internlm2", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
      "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 92544, "bias": False}, 1_889_110_016),
    ({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000}, 6_738_415_616),
    ({"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
      "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True},
     494_032_768),
])
def test_parameter_count_from_config(cfg, expected):
    assert config_parameters(cfg) == expected


def test_inspect_reads_headers_not_weights(tmp_path):
    cfg = {"architectures": ["MysteryForCausalLM"], "model_type": "mystery", "vocab_size": 10,
           "max_position_embeddings": 128, "torch_dtype": "bfloat16"}
    model = fake_model(tmp_path, "m", cfg)
    write_safetensors(model / "model.safetensors", {"a": ("BF16", [10, 4]), "b": ("F32", [3])})
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    info = inspect_model(model)
    assert info["parameters"] == 43 and info["parameters_from"] == "weights"
    assert info["weights"]["dtypes"] == {"bfloat16": 40, "float32": 3}
    assert info["chat_template"] == "tokenizer_config.json" and info["context_length"] == 128
    assert info["size_bytes"] == sum(p.stat().st_size for p in model.iterdir())
    adapter = fake_adapter(tmp_path, str(model))
    write_safetensors(adapter / "adapter_model.safetensors", {"lora_A": ("F32", [8, 4]), "lora_B": ("F32", [4, 8])})
    a = inspect_model(adapter)
    assert a["kind"] == "adapter" and a["parameters"] == 64
    assert a["adapter"] == {"peft_type": "LORA", "base_model": str(model), "base_model_local": True, "r": 8,
                            "alpha": 16, "dropout": None, "target_modules": ["q_proj", "v_proj"]}
