"""Real XTuner 0.2.0 runs on CPU with the tiny model: LoRA SFT with conversion and merge, full continued
pre-training with replay killed mid-training and resumed, and a malformed dataset failing fast.

Each run costs about a minute or two on a shared 2-core machine, so there are only three."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import runtime_python
from tests.support.procs import descendants

from finetune.finetune_helpers import sft_rows, text_rows, write_jsonl

pytestmark = pytest.mark.upstream

TIMEOUT = 900


def _chain(tmp_path: Path, model: Path, stage: str) -> Path:
    text = (f"name: ft\nworkdir: {tmp_path}/runs\ndevice: cpu\nmodel: {{path: {model}}}\n"
            f"runtimes: {{overrides: {{xtuner: {{python: {runtime_python('xtuner')}}}}}}}\n"
            "stages:\n  finetune:\n" + "".join(f"    {ln}\n" for ln in stage.strip().splitlines()))
    path = tmp_path / "chain.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _ichain(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def _in_runtime(code: str, *args: str) -> dict:
    res = subprocess.run([str(runtime_python("xtuner")), "-c", code, *args], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


# Compare two HF models' weights and load the first with its own tokenizer and chat template.
COMPARE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
a = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
b = AutoModelForCausalLM.from_pretrained(sys.argv[2], torch_dtype=torch.float32)
sa, sb = a.state_dict(), b.state_dict()
diff = max((sa[k] - sb[k]).abs().max().item() for k in sa)
tok = AutoTokenizer.from_pretrained(sys.argv[1])
text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
print(json.dumps({"max_abs_diff": diff, "keys_equal": sorted(sa) == sorted(sb), "prompt": text}))
"""


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "runs" / "manifest.json").read_text())


def test_lora_sft_convert_merge_verify(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    chain = _chain(tmp_path, tiny_model, f"""
data: {data}
method: lora
max_length: 128
max_steps: 4
save_interval: 2
log_interval: 1
lr: 0.01
lora: {{r: 8, alpha: 16, dropout: 0.0}}
evaluation_prompts: ["What is 2 + 2?"]
evaluation_max_new_tokens: 2
verify_max_new_tokens: 4
""")
    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rec = _manifest(tmp_path)["stages"]["finetune"]
    assert rec["state"] == "done"
    out = tmp_path / "runs" / "finetune"
    adapter, model = Path(rec["outputs"]["adapter"]["path"]), Path(rec["outputs"]["model"]["path"])
    assert adapter == out / "adapter" and model == out / "model"
    assert rec["outputs"]["adapter"]["kind"] == "Adapter" and rec["outputs"]["model"]["kind"] == "HFModel"
    assert rec["outputs"]["model"]["chat_template"] == "internlm2_chat"
    assert rec["outputs"]["adapter"]["base_model"] == str(tiny_model)
    assert Path(rec["outputs"]["checkpoint"]["path"]).name == "iter_4.pth"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert list(model.glob("*.safetensors")) and not list(model.glob("*.bin"))

    m = rec["metrics"]
    assert m["steps"] == 4 and len(m["loss_curve"]) == 4 and m["final_loss"] > 0
    assert m["resumed_from"] == [] and m["samples"][0]["prompt"] == "What is 2 + 2?"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verify = json.loads((out / "verify.json").read_text())
    assert 1 <= len(verify["samples"][0]["tokens"]) <= 4

    # the merged model differs from the base, loads, and its tokenizer formats prompts like training did
    cmp = _in_runtime(COMPARE, str(model), str(tiny_model))
    assert cmp["keys_equal"] and cmp["max_abs_diff"] > 1e-4
    assert cmp["prompt"] == "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert "chat_template" in json.loads((model / "tokenizer_config.json").read_text())

    # same settings again: up to date, nothing re-runs
    res = _ichain("finetune", "-c", str(chain), "--json")
    assert res.returncode == 0 and "up to date" in res.stdout


def test_full_continue_with_replay_killed_then_resumed(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "new.jsonl", text_rows(30))
    old = write_jsonl(tmp_path / "old.jsonl", text_rows(6, "The quick brown fox jumps over the lazy dog"))
    chain = _chain(tmp_path, tiny_model, f"""
mode: continue
method: full
data: {data}
replay: {{data: {old}, ratio: 0.2}}
max_length: 64
max_steps: 8
save_interval: 2
save_total_limit: -1
log_interval: 1
lr: 0.001
""")
    staging = tmp_path / "runs" / ".staging" / "finetune"
    marker = staging / "work_dir" / "last_checkpoint"
    proc = subprocess.Popen([sys.executable, "-m", "internlm_chain", "finetune", "-c", str(chain)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished (or failed) before the first checkpoint could be interrupted"
    assert marker.exists(), "no checkpoint appeared"
    # a machine crash: everything dies at once, no signal handlers run
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.5)
    interrupted_at = Path(marker.read_text().strip()).name
    assert not (tmp_path / "runs" / "finetune").exists(), "an interrupted stage must not be published"
    assert _manifest(tmp_path)["stages"]["finetune"]["state"] == "running"

    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    train_log = (tmp_path / "runs" / "finetune" / "logs" / "train.log").read_text(errors="replace")
    assert f"Auto resumed from the latest checkpoint {staging}/work_dir/{interrupted_at}" in train_log
    assert "resumed epoch: 0, iter: " in train_log
    rec = _manifest(tmp_path)["stages"]["finetune"]
    assert rec["state"] == "done" and set(rec["outputs"]) == {"checkpoint", "model"}
    assert rec["metrics"]["resumed_from"] == [interrupted_at] and rec["metrics"]["steps"] == 8
    assert [p[0] for p in rec["metrics"]["loss_curve"]] == list(range(1, 9))
    cfg = (tmp_path / "runs" / "finetune" / "xtuner_config.py").read_text()
    # 0.2 of the rows from 6 old rows: 30 × 0.25 = 8 = one pass over the 6 + a sample of 2
    assert "datasets=[new_dataset, replay_dataset, replay_sample]" in cfg and "max_dataset_length=2," in cfg
    cmp = _in_runtime(COMPARE, rec["outputs"]["model"]["path"], str(tiny_model))
    assert cmp["keys_equal"] and cmp["max_abs_diff"] > 1e-4


@pytest.mark.parametrize("bad, expected, xtuner", [
    # pyarrow cannot read the file: XTuner's check fails, the scan names the line
    ("{not json", "sft.jsonl:111: not valid JSON", ("JSON parse error",)),
    # readable but wrong: XTuner's check samples 10 random rows and usually passes (training's map would
    # crash at it later); when its sample happens to include the bad row, it fails on it itself
    ({"messages": "this should be a list"}, "sft.jsonl:111: field 'messages'",
     ("10 sampled rows passed", "XTuner's dataset check: TypeError")),
])
def test_malformed_dataset_fails_fast_with_file_line_field(tmp_path, tiny_model, bad, expected, xtuner):
    rows = sft_rows(120)
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    lines = data.read_text().splitlines()
    lines[110] = bad if isinstance(bad, str) else json.dumps(bad)  # past the rows read before starting
    data.write_text("\n".join(lines) + "\n")
    chain = _chain(tmp_path, tiny_model, f"data: {data}\nmax_steps: 2\nmax_length: 128")
    start = time.monotonic()
    res = _ichain("finetune", "-c", str(chain))
    elapsed = time.monotonic() - start
    assert res.returncode == 1, res.stderr[-3000:]
    err = res.stderr
    assert "chain.yaml:" in err and "stages.finetune.data: bad training data:" in err, err[-3000:]
    assert expected in err and any(x in err for x in xtuner), err[-3000:]
    assert not (tmp_path / "runs" / ".staging" / "finetune" / "logs" / "train.log").exists()
    assert elapsed < 180, f"the dataset check took {elapsed:.0f}s"


LOAD_CONFIGS = r"""
import json, sys
from mmengine.config import Config
out = {}
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    name = lambda t: t if isinstance(t, str) else getattr(t, "__name__", None) or str(t)
    out[path.rsplit("/", 1)[-1]] = {
        "optim": name(cfg.optim_wrapper.type), "lora_r": (cfg.model.get("lora") or {}).get("r"),
        "quant": "quantization_config" in cfg.model.llm, "backend": cfg.env_cfg.dist_cfg.backend,
        "resume": cfg.resume, "dataset": name(cfg.train_dataloader.dataset.type),
    }
print(json.dumps(out))
"""


def test_rendered_configs_load_with_mmengine(tmp_path):
    """The GPU configs cannot train here, but mmengine's own loader must accept them as XTuner will."""
    from finetune.finetune_helpers import fake_7b
    from internlm_chain.chain.planner import Planner
    from internlm_chain.config.loader import load_chain

    model = fake_7b(tmp_path)
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(3))
    write_jsonl(tmp_path / "old.jsonl", text_rows(3))
    cases = {"lora": "cuda", "qlora": "cuda", "full": "cuda", "cpt": "cpu"}
    paths = []
    for name, device in cases.items():
        stage = (f"method: {name}\n    data: {tmp_path}/sft.jsonl" if name != "cpt" else
                 f"method: full\n    mode: continue\n    data: {tmp_path}/old.jsonl\n"
                 f"    replay: {{data: {tmp_path}/old.jsonl, ratio: 0.5}}\n    max_steps: 5")
        chain = tmp_path / f"{name}.yaml"
        chain.write_text(f"name: {name}\nworkdir: {tmp_path}/{name}\ndevice: {device}\nmodel: {{path: {model}}}\n"
                         f"stages:\n  finetune:\n    {stage}\n", encoding="utf-8")
        ctx, jobs = Planner(load_chain(chain)).plan("finetune")
        train = next(j for j in jobs if j.name == "train")
        target = tmp_path / f"{name}_config.py"
        target.write_text(train.files[str(ctx.out_dir / "xtuner_config.py")], encoding="utf-8")
        paths.append(str(target))
    got = _in_runtime(LOAD_CONFIGS, *paths)
    assert got["lora_config.py"] == {"optim": "AmpOptimWrapper", "lora_r": 64, "quant": False, "backend": "nccl",
                                     "resume": True, "dataset": "process_hf_dataset"}
    assert got["qlora_config.py"]["quant"] is True and got["qlora_config.py"]["lora_r"] == 64
    assert got["full_config.py"]["lora_r"] is None
    assert got["cpt_config.py"] == {"optim": "OptimWrapper", "lora_r": None, "quant": False, "backend": "gloo",
                                    "resume": True, "dataset": "ConcatDataset"}


def test_lora_sft_one_epoch_ends_at_the_end_of_the_epoch(tmp_path, tiny_model):
    """`epochs: 1` and no max_steps: XTuner's TrainLoop turns the epoch into ceil(packed samples / batch)
    iterations, which only the train job knows (packing depends on tokenisation), so the dry-run predicts
    `iter_N.pth` and everything else exactly."""
    import re

    from internlm_chain.chain.planner import Planner
    from internlm_chain.config.loader import load_chain

    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    chain = _chain(tmp_path, tiny_model, f"""
data: {data}
method: lora
merge: false
max_length: 128
epochs: 1
warmup_ratio: 0
batch_size: 2
log_interval: 1
lr: 0.01
lora: {{r: 8, alpha: 16, dropout: 0.0}}
verify_max_new_tokens: 2
""")
    planner = Planner(load_chain(chain))
    predicted = planner.predicted_outputs(planner.context("finetune"))
    res = _ichain("finetune", "-c", str(chain))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out = tmp_path / "runs" / "finetune"
    log = (out / "logs" / "train.log").read_text(errors="replace")
    samples = int(re.search(r"Num train samples (\d+)", log).group(1))
    iters = -(-samples // 2)
    assert 1 < samples < 24  # packed: several conversations per 128-token sequence
    assert f"Iter(train) [{iters}/{iters}]" in log and f"Iter(train) [{iters + 1}/" not in log
    rec = _manifest(tmp_path)["stages"]["finetune"]
    assert rec["metrics"]["steps"] == iters and len(rec["metrics"]["loss_curve"]) == iters
    assert Path(rec["outputs"]["checkpoint"]["path"]) == out / "work_dir" / f"iter_{iters}.pth"
    assert sorted(p.name for p in (out / "work_dir").glob("iter_*.pth")) == [f"iter_{iters}.pth"]
    # the prediction: the same outputs at the same paths, but the checkpoint's iteration unknown
    assert set(predicted) == {f"finetune.{k}" for k in rec["outputs"]} == {"finetune.checkpoint", "finetune.adapter"}
    assert predicted["finetune.adapter"].path == rec["outputs"]["adapter"]["path"]
    assert predicted["finetune.checkpoint"].path == str(out / "work_dir" / "iter_N.pth")

    res = _ichain("finetune", "-c", str(chain), "--json")
    assert res.returncode == 0 and "up to date" in res.stdout
