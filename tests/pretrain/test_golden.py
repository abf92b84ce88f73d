"""Golden dry-runs of GPU-only launches: the exact InternEvo config, sbatch script and torchrun line.

InternLM2-7B on 4 nodes × 8 GPUs via Slurm (srun + InternEvo's `--launcher slurm`) and via torchrun;
InternLM2-20B with tensor parallel 4 × pipeline 2 on 2 × 8 GPUs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.pretrain.helpers import chain_text, fake_internevo_data, fake_tokenizer

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "7b-slurm-4x8": (
        "launcher: {kind: slurm, nnodes: 4, nproc_per_node: 8, master_port: 29500,\n"
        "           slurm: {partition: llm, time: '72:00:00', cpus_per_task: 16, mem: 900G}}\n",
        "model: {preset: internlm2-7b}\nparallel: {zero1: 8}\nuse_flash_attn: true\n"
        "data: {seq_len: 4096, micro_bsz: 1, micro_num: 4}\nschedule: {total_steps: 50000, warmup_ratio: 0.01}\n"
        "checkpoint: {every: 500}\noptimizer: {lr: 3.0e-4}\n"),
    "7b-torchrun-4x8": (
        "launcher: {kind: torchrun, nnodes: 4, nproc_per_node: 8, node_rank: 0, master_addr: 10.0.0.1,\n"
        "           master_port: 29500}\n",
        "model: {preset: internlm2-7b}\nparallel: {zero1: 8}\n"
        "data: {seq_len: 4096, micro_bsz: 1, micro_num: 4}\nschedule: {total_steps: 50000}\n"),
    "20b-tp4-pp2": (
        "launcher: {kind: slurm, nnodes: 2, nproc_per_node: 8, master_port: 29500, slurm: {partition: llm}}\n",
        "model: {preset: internlm2-20b}\nparallel: {zero1: -1, tensor: {size: 4, mode: msp}, pipeline: {size: 2}}\n"
        "activation_checkpoint: 1.0\ndata: {seq_len: 4096, micro_bsz: 1, micro_num: 8}\n"
        "schedule: {total_steps: 20000}\n"),
    "7b-isp-tp2-wp4": (
        "launcher: {kind: torchrun, nnodes: 1, nproc_per_node: 8, master_port: 29500}\n",
        "model: {preset: internlm2-7b}\nparallel: {zero1: -1, tensor: {size: 2, mode: isp}, weight: {size: 4}}\n"
        "use_flash_attn: true\ndata: {seq_len: 4096, micro_bsz: 1, micro_num: 4}\nschedule: {total_steps: 1000}\n"),
    "7b-interleaved-pp2": (
        "launcher: {kind: torchrun, nnodes: 1, nproc_per_node: 8, master_port: 29500}\n",
        "model: {preset: internlm2-7b}\nparallel: {pipeline: {size: 2, num_chunks: 2, interleaved_overlap: true}}\n"
        "use_flash_attn: true\ndata: {seq_len: 4096, micro_bsz: 1, micro_num: 8}\nschedule: {total_steps: 1000}\n"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_launch_golden(name, tmp_path, write_chain, golden):
    launcher, pretrain = CASES[name]
    fake_internevo_data(tmp_path / "data")
    fake_tokenizer(tmp_path / "tok", 92544)
    body = pretrain.replace("data: {", f"data: {{path: {tmp_path}/data, ") + f"tokenizer: {tmp_path}/tok\n"
    path = write_chain(chain_text(tmp_path, body, device="cuda", launcher=launcher))
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "pretrain", "-c", str(path), "--dry-run",
                          "--show-files"], capture_output=True, text=True,
                         env={"ICHAIN_CACHE": "/cache", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    text = "\n".join(line for line in res.stdout.splitlines() if "fingerprint" not in line) + "\n"
    golden.check(f"pretrain/{name}.txt", text, {str(tmp_path): "<TMP>", str(REPO): "<REPO>"})
    if "slurm" in launcher:
        assert "--launcher slurm --port 29500" in text and "--ntasks-per-node=8" in text
    else:
        assert "-m torch.distributed.run --nnodes" in text and "--launcher torch" in text
