"""Golden tests of what each launcher renders (the exact argv / sbatch script that runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from launch_helpers import FAKE

from internlm_chain.chain.job import Job, Resources, render_jobs_text
from internlm_chain.config.base import LauncherSettings
from internlm_chain.errors import ChainError
from internlm_chain.launch.base import PORT_BASE, PORT_SPAN, derived_port, effective_settings, launcher_for

WD = "/runs/demo"


def train_job(**kw) -> Job:
    base = dict(stage="finetune", name="train", cwd=f"{WD}/.staging/finetune", distributed=True,
                argv=["/envs/xtuner/bin/python", "-m", "xtuner.tools.train", "cfg.py", "--work-dir", "out dir"],
                env={"HF_HOME": "/cache/hf", "TOKENIZERS_PARALLELISM": "false"},
                log=f"{WD}/.staging/finetune/logs/train.log",
                resources=Resources(gpus_per_node=8, cpus_per_task=16, mem="200G", time="04:00:00"))
    return Job(**{**base, **kw})


def render(settings: dict, job: Job) -> Job:
    from pathlib import Path

    return launcher_for(LauncherSettings.model_validate(settings), Path(WD)).render(job)


def test_local_runs_the_job_as_planned(golden):
    job = train_job()
    assert render({"kind": "local"}, job) == job
    golden.check("launch/local.txt", render_jobs_text([render({"kind": "local"}, job)]))


def test_torchrun_static_and_c10d(golden):
    static = render({"kind": "torchrun", "nnodes": 2, "nproc_per_node": 8, "node_rank": 1,
                     "master_addr": "10.0.0.1", "master_port": 29500}, train_job())
    c10d = render({"kind": "torchrun", "nnodes": 2, "nproc_per_node": 4, "rdzv_backend": "c10d",
                   "master_addr": "head"}, train_job())
    container = render({"kind": "torchrun", "nproc_per_node": 2},
                       train_job(argv=["apptainer", "exec", "--nv", "img.sif", "python", "train.py"]))
    golden.check("launch/torchrun.txt", render_jobs_text([static, c10d, container]))
    plain = train_job(distributed=False)
    assert render({"kind": "torchrun", "nproc_per_node": 8}, plain) == plain


def test_torchrun_port_is_deterministic_and_in_range():
    a = render({"kind": "torchrun"}, train_job()).argv
    b = render({"kind": "torchrun"}, train_job()).argv
    assert a == b
    port = int(a[a.index("--master-port") + 1])
    assert port == derived_port(__import__("pathlib").Path(WD), "finetune")
    assert PORT_BASE <= port < PORT_BASE + PORT_SPAN
    assert derived_port(__import__("pathlib").Path(WD), "pretrain") != port


def test_torchrun_needs_a_python_job():
    with pytest.raises(ChainError, match="must start with a Python interpreter"):
        render({"kind": "torchrun"}, train_job(argv=["./train.sh"]))


SLURM = {"kind": "slurm", "nnodes": 2, "nproc_per_node": 8, "master_port": 29500,
         "slurm": {"partition": "gpu", "account": "lab", "qos": "high", "extra_args": ["--exclusive"]}}


@pytest.mark.parametrize("case", ["torchrun", "srun", "single"])
def test_slurm_script(golden, case, tmp_path):
    job = {"torchrun": train_job(), "srun": train_job(slurm_launch="srun"),
           "single": train_job(distributed=False, name="convert", resources=Resources())}[case]
    rendered = render(SLURM, job)
    script_path = f"{WD}/.staging/finetune/slurm/{job.name}.sbatch"
    assert rendered.argv == ["sbatch", "--parsable", script_path]
    assert rendered.env == {}
    script = rendered.files[script_path]
    golden.check(f"launch/slurm-{case}.sbatch", script)
    (tmp_path / "s.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0


def test_slurm_torchrun_line_expands_node_rank_per_task(tmp_path):
    """Run the srun line's command with bash, as each task does, with a `python` that prints its argv."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    python.chmod(0o755)
    script = render(SLURM, train_job(argv=[str(python), "train.py", "out dir", "$HOME"])).files
    line = next(ln for ln in next(iter(script.values())).splitlines() if ln.startswith("srun "))
    inner = line.split(" bash -c ", 1)[1]
    out = subprocess.run(["bash", "-c", f"bash -c {inner}"], capture_output=True, text=True,
                         env={"SLURM_NODEID": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "29500",
                              "SLURM_JOB_ID": "42", "HOME": "/root", "PATH": "/usr/bin:/bin"})
    assert out.stdout.splitlines() == ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "8",
                                       "--node-rank", "1", "--master-addr", "node7", "--master-port", "29500",
                                       "train.py", "out dir", "$HOME"]


def test_stage_override_merges_field_by_field():
    chain = LauncherSettings.model_validate({"kind": "slurm", "nnodes": 4, "slurm": {"partition": "a", "qos": "q"}})
    stage = LauncherSettings.model_validate({"nnodes": 1, "slurm": {"partition": "b"}})
    merged = effective_settings(chain, stage)
    assert (merged.kind, merged.nnodes, merged.slurm.partition, merged.slurm.qos) == ("slurm", 1, "b", "q")


def test_launch_flags_override_the_chain_file(tmp_path, golden):
    chain = tmp_path / "chain.yaml"
    chain.write_text("name: flags\nworkdir: wd\ndevice: cpu\nlauncher: {kind: local}\n"
                     f"stages:\n  data: {{plugin: {FAKE}:SRUN_TASKS, launcher: {{nnodes: 3}}}}\n")
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "run", str(chain), "--dry-run", "--show-files",
                          "--launcher", "slurm", "--nnodes", "2", "--nproc-per-node", "4", "--partition", "debug"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = res.stdout.replace(str(tmp_path), "TMP").replace(sys.executable, "PYTHON").replace(str(FAKE), "FAKE")
    import re

    text = re.sub(r"fingerprint [0-9a-f]{12}", "fingerprint X", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "HASH", text)  # settings hash: holds the checkout's path
    text = re.sub(r"MASTER_PORT=\d+", "MASTER_PORT=PORT", text)  # derived from the (temporary) workdir
    golden.check("launch/dry-run-flags.txt", text)
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --partition=debug" in text and "sbatch --parsable" in text
    bad = subprocess.run([sys.executable, "-m", "internlm_chain", "run", str(chain), "--dry-run",
                          "--launcher", "slurmm"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --launcher: 'slurmm' is not a launcher") and "Traceback" not in bad.stderr
