"""Golden tests: InternLM2-7B LoRA DPO on one 8-GPU node, launched with torchrun and with Slurm — every
planned job with its rendered files, then the train job as the launcher starts it. Pure planning."""

from __future__ import annotations

import json

import pytest

from finetune.finetune_helpers import fake_7b_chat, pair_rows, write_jsonl
from internlm_chain.chain.job import render_jobs_text
from internlm_chain.chain.planner import Planner
from internlm_chain.chain.runner import ChainRunner
from internlm_chain.config.loader import load_chain

REPO_SRC = str(__import__("internlm_chain").__file__).rsplit("/internlm_chain/", 1)[0]

CHAIN = """\
name: internlm2-7b-dpo
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
    mode: dpo
    method: lora
    data: {tmp}/data/pairs.jsonl
    lora: {{r: 64, alpha: 16, dropout: 0.1}}
    preference: {{beta: 0.1, loss_type: sigmoid}}
    max_length: 2048
    batch_size: 1
    accumulative_counts: 2
    lr: 5.0e-6
    epochs: 1
    warmup_ratio: 0.03
    save_interval: 500
    evaluation_prompts: ["Please tell me five scenic spots in Shanghai"]
"""

LAUNCHERS = {
    "torchrun_1x8": "{kind: torchrun, nnodes: 1, nproc_per_node: 8, master_port: 29500}",
    "slurm_1x8": "{kind: slurm, nnodes: 1, nproc_per_node: 8, master_port: 29500, "
                 "slurm: {partition: llm, time: '24:00:00'}}",
}


def _clean(text: str, tmp_path) -> str:
    return text.replace(str(tmp_path), "<TMP>").replace(REPO_SRC, "<SRC>")


@pytest.mark.parametrize("case", sorted(LAUNCHERS))
def test_internlm2_7b_lora_dpo(case, tmp_path, write_chain, golden):
    model = fake_7b_chat(tmp_path)
    write_jsonl(tmp_path / "data" / "pairs.jsonl", pair_rows(100))  # an epoch long enough for the 3% warm-up
    path = write_chain(CHAIN.format(tmp=tmp_path, model=model, launcher=LAUNCHERS[case]))
    loaded = load_chain(path)
    ctx, jobs = Planner(loaded).plan("finetune")
    planned = render_jobs_text(jobs, show_files=True) + "\n" + "\n".join(
        f"# job {j.name}: distributed={j.distributed} resources={json.dumps(j.resources.model_dump())}" for j in jobs)
    (outcome,) = ChainRunner(loaded, quiet=True).dry_run(["finetune"])
    train = next(j for j in outcome.jobs if j.name == "train")
    train = train.model_copy(update={"files": {k: v for k, v in train.files.items()
                                               if not k.endswith("xtuner_config.py")}})
    launched = render_jobs_text([train], show_files=True)
    text = planned + "\n\n# ==== the train job as launched ====\n" + launched
    golden.check(f"finetune/internlm2_7b_lora_dpo_{case}.txt", _clean(text, tmp_path))
