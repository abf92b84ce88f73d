"""Golden tests: the exact XTuner configs and job lines the stage plans for InternLM2-7B on GPUs, and for
a CPU continued pre-training with replay. Pure planning (no runtime needed).

The torchrun/Slurm wrapping itself belongs to the launchers; these goldens pin what the stage hands them
(`--launcher pytorch|slurm`, `distributed`, resources)."""

from __future__ import annotations

import json

import pytest

from finetune.finetune_helpers import fake_7b, sft_rows, text_rows, write_jsonl
from internlm_chain.chain.job import render_jobs_text
from internlm_chain.chain.planner import Planner
from internlm_chain.chain.runner import ChainRunner
from internlm_chain.config.loader import load_chain

REPO_SRC = str(__import__("internlm_chain").__file__).rsplit("/internlm_chain/", 1)[0]

GPU_CHAIN = """\
name: internlm2-7b-{name}
workdir: {tmp}/runs
device: cuda
model:
  path: {model}
  chat_template: internlm2_chat
runtimes:
  cache_dir: {tmp}/cache
launcher: {launcher}
stages:
  finetune:
    data: {tmp}/data/sft.jsonl
    max_length: 2048
    batch_size: 1
    accumulative_counts: 16
    lr: {lr}
    epochs: 1
    save_interval: 500
    evaluation_prompts: ["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"]
{extra}
"""

CASES = {
    "lora_1gpu": dict(launcher="{kind: local}", lr="2e-4", extra="    method: lora\n    lora: {r: 64, alpha: 16, dropout: 0.1}"),
    "qlora_1gpu": dict(launcher="{kind: local}", lr="2e-4", extra="    method: qlora\n    lora: {r: 64, alpha: 16, dropout: 0.1, target_modules: [wqkv, wo, w1, w2, w3]}"),
    "full_zero3_2x8_torchrun": dict(
        launcher="{kind: torchrun, nnodes: 2, nproc_per_node: 8, master_addr: node-0, master_port: 29500}",
        lr="2e-5", extra="    method: full\n    deepspeed: zero3"),
    "full_zero3_2x8_slurm": dict(
        launcher="{kind: slurm, nnodes: 2, nproc_per_node: 8, master_port: 29500, slurm: {partition: llm, time: '48:00:00'}}",
        lr="2e-5", extra="    method: full\n    deepspeed: zero3"),
}


def _plan_text(path, tmp_path) -> str:
    loaded = load_chain(path)
    ctx, jobs = Planner(loaded).plan("finetune")
    text = render_jobs_text(jobs, show_files=True)
    extra = "\n".join(f"# job {j.name}: distributed={j.distributed} resources={json.dumps(j.resources.model_dump())}"
                      for j in jobs)
    return (text + "\n" + extra + "\n").replace(str(tmp_path), "<TMP>").replace(REPO_SRC, "<SRC>")


@pytest.mark.parametrize("case", sorted(CASES))
def test_internlm2_7b_plans(case, tmp_path, write_chain, golden):
    model = fake_7b(tmp_path)
    write_jsonl(tmp_path / "data" / "sft.jsonl", sft_rows(4))
    path = write_chain(GPU_CHAIN.format(name=case.replace("_", "-"), tmp=tmp_path, model=model, **CASES[case]))
    golden.check(f"finetune/internlm2_7b_{case}.txt", _plan_text(path, tmp_path))


def test_cpu_continue_full_with_replay(tmp_path, write_chain, golden):
    model = fake_7b(tmp_path)
    write_jsonl(tmp_path / "data" / "new.jsonl", text_rows(30))
    write_jsonl(tmp_path / "data" / "old.jsonl", text_rows(4, "The quick brown fox"))
    path = write_chain(f"""\
name: cpt
workdir: {tmp_path}/runs
device: cpu
model: {{path: {model}}}
runtimes: {{cache_dir: {tmp_path}/cache}}
stages:
  finetune:
    mode: continue
    method: full
    data: {tmp_path}/data/new.jsonl
    replay: {{data: {tmp_path}/data/old.jsonl, ratio: 0.2}}
    max_length: 256
    max_steps: 20
    warmup_ratio: 0.1
    save_interval: 5
""")
    golden.check("finetune/cpu_continue_full_replay.txt", _plan_text(path, tmp_path))


@pytest.mark.parametrize("case", ["full_zero3_2x8_torchrun", "full_zero3_2x8_slurm"])
def test_internlm2_7b_multinode_as_launched(case, tmp_path, write_chain, golden):
    """The train job as the torchrun / Slurm launcher will start it (argv wrapped, sbatch script)."""
    model = fake_7b(tmp_path)
    write_jsonl(tmp_path / "data" / "sft.jsonl", sft_rows(4))
    path = write_chain(GPU_CHAIN.format(name=case.replace("_", "-"), tmp=tmp_path, model=model, **CASES[case]))
    (outcome,) = ChainRunner(load_chain(path), quiet=True).dry_run(["finetune"])
    train = next(j for j in outcome.jobs if j.name == "train")
    train = train.model_copy(update={"files": {k: v for k, v in train.files.items()
                                               if not k.endswith("xtuner_config.py")}})
    text = render_jobs_text([train], show_files=True)
    golden.check(f"finetune/internlm2_7b_{case}.launched.txt",
                 text.replace(str(tmp_path), "<TMP>").replace(REPO_SRC, "<SRC>"))
