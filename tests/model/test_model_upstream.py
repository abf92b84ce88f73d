"""Real runs of `ichain model …` on CPU with the tiny model in the xtuner runtime: merge a real PEFT adapter
(logits must match base+adapter), convert a real XTuner checkpoint, chat one-shot and interactive, and
inspect's parameter count against the weights themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

pytestmark = pytest.mark.upstream

HERE = Path(__file__).resolve().parent
TIMEOUT = 300


def _ichain(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def _in_runtime(code_or_script: str, *args: str) -> dict:
    head = [code_or_script] if code_or_script.endswith(".py") else ["-c", code_or_script]
    res = subprocess.run([str(runtime_python("xtuner")), *head, *args], capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "lora"
    _in_runtime(str(HERE / "make_adapter.py"), str(tiny_model), str(out))
    return out


# logits of base alone, base+adapter (unmerged PEFT) and the merged model, on the same token ids
LOGITS = r"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base, adapter, merged = sys.argv[1:4]
ids = torch.tensor([[1, 5, 40, 77, 200, 301, 9, 4, 123]])
def logits(m):
    with torch.no_grad():
        return m.eval()(ids).logits
plain = logits(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32))
with_adapter = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32), adapter))
m = AutoModelForCausalLM.from_pretrained(merged)
got = logits(m)
tok = AutoTokenizer.from_pretrained(merged)
print(json.dumps({"merged_vs_peft": (got - with_adapter).abs().max().item(),
                  "adapter_effect": (with_adapter - plain).abs().max().item(),
                  "dtype": str(m.dtype), "has_lora": any("lora" in k for k in m.state_dict()),
                  "template": tok.chat_template is not None}))
"""


def test_merge_reproduces_base_plus_adapter(tiny_model, adapter, tmp_path):
    out = tmp_path / "merged"
    res = _ichain("model", "merge", "--adapter", str(adapter), "-o", str(out), "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["out"] == str(out) and report["ok"] and report["dtype"] == "float32"
    assert report["max_abs_logit_diff"] < 1e-4 and report["sample"]["tokens"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no scratch, no log left behind
    got = _in_runtime(LOGITS, str(tiny_model), str(adapter), str(out))
    assert got["adapter_effect"] > 0.05, got  # the adapter changes the function, so the check can fail
    assert got["merged_vs_peft"] < 1e-4, got
    assert got["dtype"] == "torch.float32" and not got["has_lora"] and got["template"], got
    # an existing output is never touched
    again = _ichain("model", "merge", "--adapter", str(adapter), "-o", str(out), "--device", "cpu")
    assert again.returncode == 2 and "--out" in again.stderr


def test_failed_merge_leaves_nothing(tiny_model, adapter, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    res = _ichain("model", "merge", "--adapter", str(broken), "-o", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert res.returncode == 1, res.stderr[-2000:]
    assert "merge failed" in res.stderr and ".out.log" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.log", "broken"]


# the tensors of an XTuner .pth and of the adapter pth_to_hf made from it
SAME_TENSORS = r"""
import json, sys, torch
from safetensors.torch import load_file
pth = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["state_dict"]
hf = load_file(sys.argv[2] + "/adapter_model.safetensors")
want = {k.removeprefix("llm.").replace(".default.", "."): v for k, v in pth.items()}
print(json.dumps({"same_keys": sorted(want) == sorted(hf), "n": len(hf),
                  "max_diff": max((want[k] - hf[k]).abs().max().item() for k in hf) if hf else None}))
"""


def test_convert_xtuner_checkpoint(tiny_model, tmp_path):
    from internlm_chain.stages.finetune.render import ConfigSpec, render_config
    from internlm_chain.stages.finetune.settings import FinetuneSettings

    settings = FinetuneSettings(method="lora", max_steps=2, max_length=128, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    cfg = tmp_path / "xtuner_config.py"
    cfg.write_text(render_config(ConfigSpec(settings=settings, device="cpu", model=str(tiny_model),
                                            template="internlm2_chat", data_files=(str(tmp_path / "x.jsonl"),))))
    pth = tmp_path / "work_dir" / "iter_2.pth"
    pth.parent.mkdir()
    made = _in_runtime(str(HERE / "make_checkpoint.py"), str(cfg), str(pth))
    assert made["tensors"] > 0
    out = tmp_path / "hf"
    res = _ichain("model", "convert", str(pth), "--config", str(cfg), "-o", str(out), "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["kind"] == "adapter" and report["base"] == str(tiny_model) and report["sample"]["tokens"]
    assert report["template"] == {"name": "internlm2_chat", "kept_existing": True}
    assert (out / "tokenizer.json").is_file() and not (tmp_path / ".hf.partial").exists()
    same = _in_runtime(SAME_TENSORS, str(pth), str(out))
    assert same == {"same_keys": True, "n": made["tensors"], "max_diff": 0.0}, same


def test_chat_one_shot_and_interactive(tiny_model, adapter):
    common = [str(tiny_model), "--adapter", str(adapter), "--device", "cpu", "--max-new-tokens", "6",
              "--system", "Be brief."]
    one = _ichain("model", "chat", *common, "-m", "What is 2 + 3?", "-m", "And 3 + 4?")
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.count("\n") == 2 and one.stdout.strip(), one.stdout  # one streamed reply per turn
    talk = _ichain("model", "chat", *common, input="What is 2 + 3?\nAnd 3 + 4?\n\nnever read\n")
    assert talk.returncode == 0, talk.stderr[-3000:]
    assert talk.stdout == one.stdout  # the same two turns, greedy: same replies; the empty line ended it


def test_inspect_counts_what_the_weights_hold(tiny_model):
    res = _ichain("model", "inspect", str(tiny_model), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    weights = _in_runtime("import json, sys\nfrom safetensors.numpy import load_file\n"
                          "w = load_file(sys.argv[1] + '/model.safetensors')\n"
                          "print(json.dumps({'n': sum(int(v.size) for v in w.values())}))",
                          str(tiny_model))
    assert info["parameters_from"] == "config" and info["parameters"] == weights["n"]
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"] == "tokenizer_config.json"
    assert info["vocab_size"] > 0 and info["context_length"] == 2048 and info["dtype"] == "float32"
