"""Real InternEvo on CPU (smoke mode): the data stage's output → a tiny InternLM2-shaped model trained
for real steps, killed -9 mid-run, auto-resumed from its latest checkpoint, converted to an HF Llama
model whose logits match InternEvo's (fp32, < 1e-4), and loaded by transformers. Plus `--validate`
through InternEvo's own loader for world sizes 1 and 8.

One chain is built and run once per module (data ≈ 15 s, training ≈ 60 s, conversion + check ≈ 50 s).
"""

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

from internlm_chain.workers.datapipe.demo_corpus import write_demo

pytestmark = pytest.mark.upstream

TOTAL, EVERY, KILL_AT = 120, 20, 30


def ichain(*args, check=True, **kw):
    res = subprocess.run([sys.executable, "-m", "internlm_chain", *map(str, args)], capture_output=True, text=True,
                         **kw)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def read_steps(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain-smoke")
    write_demo(str(tmp / "corpus"), n_docs=120)
    chain = tmp / "chain.yaml"
    chain.write_text(f"""name: smoke
workdir: {tmp}/work
device: cpu
runtimes:
  overrides:
    data: {{python: {runtime_python("data")}}}
    internevo: {{python: {runtime_python("internevo")}}}
    xtuner: {{python: {runtime_python("xtuner")}}}
stages:
  data:
    inputs: [corpus]
    tokenizer: train
    tokenizer_vocab_size: 1000
    outputs: [clean, internevo]
  pretrain:
    model: {{preset: tiny}}
    data: {{seq_len: 64, micro_bsz: 2, micro_num: 1, num_workers: 0}}
    schedule: {{total_steps: {TOTAL}, warmup_ratio: 0.05}}
    checkpoint: {{every: {EVERY}}}
    optimizer: {{lr: 0.003}}
""", encoding="utf-8")
    ichain("run", chain, "--only", "data", "-q")

    # first attempt: killed -9 (ichain and the training process group) after a checkpoint was written
    staging = tmp / "work" / ".staging" / "pretrain"
    first = subprocess.Popen([sys.executable, "-m", "internlm_chain", "pretrain", "-c", str(chain), "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(r["step"] >= KILL_AT for r in read_steps(staging / "metrics.jsonl")):
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "training did not reach the kill step"
        time.sleep(0.05)
    driver = read_steps(staging / "metrics.jsonl")[-1]["pid"]
    killed_at = read_steps(staging / "metrics.jsonl")[-1]["step"]
    os.kill(first.pid, signal.SIGKILL)
    os.killpg(driver, signal.SIGKILL)  # its own process group: the kill of ichain does not reach it
    first.wait()
    assert killed_at < TOTAL, "the run finished before it could be killed: raise TOTAL"

    second = ichain("pretrain", "-c", chain, "--json")
    return {"tmp": tmp, "chain": chain, "work": tmp / "work", "killed_at": killed_at,
            "summary": json.loads(second.stdout)}


def test_trained_killed_and_resumed(run):
    stage = {s["stage"]: s for s in run["summary"]["stages"]}["pretrain"]
    assert stage["status"] == "done"
    out = run["work"] / "pretrain"
    log = (out / "logs" / "train.log").read_text()
    assert "smoke mode" in log
    resumed = (run["killed_at"] // EVERY) * EVERY
    assert f"resumed at step {resumed} from local:" in log  # the newest checkpoint, not a fresh start
    steps = {r["step"]: r for r in read_steps(out / "metrics.jsonl")}
    assert sorted(steps) == list(range(1, TOTAL + 1))
    first, last = steps[1]["loss"], steps[TOTAL]["loss"]
    assert last < first - 0.5, (first, last)  # it really trained
    assert (out / "checkpoints" / str(TOTAL) / "model_tp0_pp0.pt").exists()
    manifest = json.loads((run["work"] / "manifest.json").read_text())["stages"]["pretrain"]
    assert manifest["outputs"]["checkpoint"]["kind"] == "InternEvoCheckpoint"
    assert manifest["outputs"]["checkpoint"]["path"] == str(out / "checkpoints" / str(TOTAL))
    assert manifest["metrics"]["smoke_mode"] is True and manifest["metrics"]["loss_last"] == last


def test_hf_conversion_matches_and_loads_in_transformers(run):
    out = run["work"] / "pretrain"
    report = json.loads((out / "hf_verify.json").read_text())
    assert report["ok"] and report["max_abs_diff"] < 1e-4 and report["architecture"] == "LlamaForCausalLM"
    assert report["trained_max_abs_diff"] < 1e-4  # vs the model as the driver trained it
    cfg = json.loads((out / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert "auto_map" not in cfg  # no remote code
    script = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(out / 'hf')!r})
model = AutoModelForCausalLM.from_pretrained({str(out / 'hf')!r}, trust_remote_code=False)
prompt = tok.apply_chat_template([{{"role": "user", "content": "hello"}}], tokenize=False, add_generation_prompt=True)
ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
gen = model.generate(ids, max_new_tokens=4, do_sample=False)
print(json.dumps({{"prompt": prompt, "new": gen.shape[1] - ids.shape[1], "cls": type(model).__name__}}))
"""
    res = subprocess.run([str(runtime_python("xtuner")), "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["cls"] == "LlamaForCausalLM" and got["new"] == 4 and "<|im_start|>assistant" in got["prompt"]


def test_the_verification_can_fail(run, tmp_path):
    """A wrong RoPE base in the converted config must be caught by the logits comparison."""
    out = run["work"] / "pretrain"
    bad = tmp_path / "hf"
    subprocess.run(["cp", "-r", str(out / "hf"), str(bad)], check=True)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["rope_theta"] = cfg["rope_theta"] * 100
    (bad / "config.json").write_text(json.dumps(cfg))
    worker = Path(__file__).resolve().parents[2] / "src/internlm_chain/workers/pretrain_verify_hf.py"
    res = subprocess.run([str(runtime_python("xtuner")), str(worker), "--model", str(bad), "--probe",
                          str(out / "hf_probe.npz"), "--out", str(tmp_path / "v.json")], capture_output=True, text=True)
    assert res.returncode == 1 and "MISMATCH" in res.stdout
    assert json.loads((tmp_path / "v.json").read_text())["max_abs_diff"] > 1e-4


def test_validate_with_internevo_loader_world_1_and_8(run):
    chain = run["chain"]
    res = ichain("pretrain", "-c", chain, "--validate")
    assert "valid for 1 process(es)" in res.stdout and "Config.from_file" in res.stdout
    res = ichain("pretrain", "-c", chain, "--validate", "--launcher", "torchrun", "--nproc-per-node", "8",
                 "--set", "stages.pretrain.parallel.zero1=4", "--set", "stages.pretrain.parallel.tensor.size=2",
                 "--json")
    got = json.loads(res.stdout)
    assert got["ok"] and got["world_size"] == 8 and (got["dp"], got["tp"], got["zero1"]) == (4, 2, 4)
    bad = ichain("pretrain", "-c", chain, "--validate", "--launcher", "torchrun", "--nproc-per-node", "8",
                 "--set", "stages.pretrain.parallel.zero1=3", check=False)
    assert bad.returncode == 2 and "ZeRO-1 size 3 does not divide the data-parallel size 8" in bad.stderr


def test_validate_worker_reports_rules_and_loader_errors(run, tmp_path):
    """The runtime side on its own: the config InternEvo's loader read, judged for 8 processes."""
    worker = Path(__file__).resolve().parents[2] / "src/internlm_chain/workers/pretrain_validate.py"
    good = (run["work"] / "pretrain" / "internevo_config.py").read_text()
    bad = tmp_path / "bad.py"
    bad.write_text(good.replace("tensor=dict(size=1", "tensor=dict(size=3").replace(
        "use_packed_dataset=False", "use_packed_dataset=True"))
    res = subprocess.run([str(runtime_python("internevo")), str(worker), "--config", str(bad), "--world-size", "8"],
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stderr[-2000:]
    keys = {f["key"]: f["rule"] for f in json.loads(res.stdout)["findings"]}
    assert "ParallelContext.check_sanity" in keys["parallel.tensor.size"]
    assert "same value as use_flash_attn" in keys["data.use_packed_dataset"]
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(\n")
    res = subprocess.run([str(runtime_python("internevo")), str(worker), "--config", str(broken), "--world-size",
                          "1"], capture_output=True, text=True)
    assert res.returncode == 2 and "SyntaxError" in json.loads(res.stdout)["load_error"]


@pytest.mark.parametrize("parallel,layers", [
    ("{tensor: {size: 2}}", 2), ("{pipeline: {size: 2}}", 2),
    ("{pipeline: {size: 2, num_chunks: 2, interleaved_overlap: true}}", 4)])
def test_two_processes_under_torchrun_merge_into_one_hf_model(run, tmp_path, parallel, layers):
    """Tensor shards (column/row/embedding/head splits), pipeline stages and interleaved model chunks
    (stage 0 holds layers 0 and 2, stage 1 layers 1 and 3) are merged; the HF model matches InternEvo's
    logits, both of the model rebuilt from the merged weights and of the trained, still-sharded model (the
    pipeline's chunks run stage by stage)."""
    data = run["work"] / "data"
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"""name: two
workdir: {tmp_path}/work
device: cpu
launcher: {{kind: torchrun, nproc_per_node: 2}}
runtimes:
  overrides:
    internevo: {{python: {runtime_python("internevo")}}}
    xtuner: {{python: {runtime_python("xtuner")}}}
stages:
  pretrain:
    model: {{preset: tiny, num_layers: {layers}}}
    tokenizer: {data / "tokenizer"}
    parallel: {parallel}
    data: {{path: {data / "internevo"}, seq_len: 64, micro_bsz: 2, micro_num: 2, num_workers: 0}}
    schedule: {{total_steps: 4}}
    checkpoint: {{every: 2}}
""", encoding="utf-8")
    ichain("pretrain", "-c", chain, "-q")
    out = tmp_path / "work" / "pretrain"
    shards = sorted(p.name for p in (out / "checkpoints" / "4").glob("model_tp*_pp*.pt"))
    assert shards == (["model_tp0_pp0.pt", "model_tp1_pp0.pt"] if "tensor" in parallel
                      else ["model_tp0_pp0.pt", "model_tp0_pp1.pt"])
    chunks = 2 if "num_chunks" in parallel else 1
    assert "converting step 4 (2 shard(s)" in (out / "logs" / "convert.log").read_text()
    assert f"{chunks} chunk(s) per stage" in (out / "logs" / "convert.log").read_text()
    report = json.loads((out / "hf_verify.json").read_text())
    assert report["ok"] and report["max_abs_diff"] < 1e-4
    assert report["trained_max_abs_diff"] < 1e-4  # the merge against the sharded model's own forward
    assert json.loads((out / "hf" / "config.json").read_text())["num_hidden_layers"] == layers
    assert len(read_steps(out / "metrics.jsonl")) == 4  # one writer: the last pipeline stage's first rank


def test_isp_checkpoint_merges_into_the_sharded_models_function(run, tmp_path):
    """ISP (sequence parallel 2 × weight parallel 2) does not train correctly without flash attention, so no
    training here: InternEvo builds the isp-sharded model, saves it with its own save_model_checkpoint
    (model_tp0_wp0_pp0 and model_tp1_wp1_pp0 — not a tp × wp grid), and runs it forward; the converter's HF
    model must give the same logits."""
    cfg = (run["work"] / "pretrain" / "internevo_config.py").read_text()
    cfg = cfg.replace("tensor=dict(size=1, mode='mtp')", "tensor=dict(size=2, mode='isp')").replace(
        "weight=dict(size=1, overlap=False, memory_pool=False)", "weight=dict(size=2, overlap=True, memory_pool=True)")
    assert "mode='isp'" in cfg and "weight=dict(size=2" in cfg
    (tmp_path / "cfg.py").write_text(cfg)
    here = Path(__file__).resolve().parent
    workers = here.parents[1] / "src/internlm_chain/workers"
    py = str(runtime_python("internevo"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    res = subprocess.run([py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29613",
                          str(here / "isp_checkpoint.py"), str(tmp_path / "cfg.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "1").glob("model_*.pt")) == [
        "model_tp0_wp0_pp0.pt", "model_tp1_wp1_pp0.pt"]
    res = subprocess.run([py, str(workers / "pretrain_to_hf.py"), "--checkpoints", str(tmp_path / "checkpoints"),
                          "--config", str(tmp_path / "cfg.py"), "--out", str(tmp_path / "hf"), "--dtype", "float32",
                          "--probe", str(tmp_path / "hf_probe.npz"), "--tokenizer",
                          str(run["work"] / "data" / "tokenizer")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tp0_wp0_pp0, tp1_wp1_pp0" in res.stdout
    res = subprocess.run([str(runtime_python("xtuner")), str(workers / "pretrain_verify_hf.py"), "--model",
                          str(tmp_path / "hf"), "--probe", str(tmp_path / "hf_probe.npz"), "--out",
                          str(tmp_path / "v.json"), "--train-probe", str(tmp_path / "sharded_probe.npz")],
                         capture_output=True, text=True, env=env)
    report = json.loads((tmp_path / "v.json").read_text())
    assert res.returncode == 0 and report["ok"], res.stdout[-2000:]
    assert report["trained_max_abs_diff"] < 1e-4 and report["max_abs_diff"] < 1e-4


def test_converter_layout_arithmetic_matches_internevo(tmp_path):
    """Our layer partition equals InternEvo's partition_uniform; the shard files InternEvo's save rule writes;
    shards that disagree on a replicated tensor (isp with tensor size 1: the layer norms drift apart) are
    refused, not averaged or picked."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / "src/internlm_chain/workers")!r})
import pretrain_to_hf as C
from internlm.core.parallel.shard import partition_uniform
n = 0
for layers in range(1, 13):
    for pp in range(1, 5):
        for chunks in range(1, 4):
            if layers % chunks or layers // chunks < pp:
                continue
            assert C.layer_ranges(layers, pp, chunks) == partition_uniform(layers, pp, chunks), (layers, pp, chunks)
            n += 1
assert C.expected_shards(2, 2, 1, True) == {{(0, 0, 0), (1, 1, 0)}}
assert C.expected_shards(1, 4, 2, True) == {{(0, w, p) for w in range(4) for p in range(2)}}
assert C.expected_shards(2, 4, 1, True) == {{(0, 0, 0), (1, 1, 0), (0, 2, 0), (1, 3, 0)}}
assert C.expected_shards(2, 1, 1, False) == {{(0, 0, 0), (1, 0, 0)}}
a = {{"norm.weight": torch.ones(4), "layers.0.attention.wqkv.weight": torch.zeros(2, 4)}}
b = {{"norm.weight": torch.ones(4) + 1e-3, "layers.0.attention.wqkv.weight": torch.ones(2, 4)}}
merged = C.merge_stage({{(0, 0): a, (0, 1): {{**b, "norm.weight": torch.ones(4)}}}}, 1, 2, True)
assert merged["layers.0.attention.wqkv.weight"].tolist() == [[0.0] * 4] * 2 + [[1.0] * 4] * 2
print("checked", n)
C.merge_stage({{(0, 0): a, (0, 1): b}}, 1, 2, True)
"""
    res = subprocess.run([str(runtime_python("internevo")), "-c", script], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert "checked" in res.stdout, res.stderr[-3000:]
    assert res.returncode == 2 and "norm.weight should be identical in every shard but differs by up to 0.001" \
        in res.stderr
