"""`executor: slurm` end to end on a real local Slurm: datatrove job arrays chained with afterok are
submitted, followed and checked; a re-run resumes from datatrove's completion files; the rendered
sbatch scripts are golden."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from tests.conftest import runtime_python

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "src" / "internlm_chain" / "workers"
pytestmark = [pytest.mark.upstream, pytest.mark.slurm]


def _run(cluster, out: Path, corpus: Path):
    cfg = {"out_dir": str(out), "inputs": [str(corpus)], "workers": 2, "executor": "slurm",
           "outputs": ["clean", "xtuner"], "slurm": {"partition": "debug", "time": "00:10:00"},
           "keep_work": True}  # keep the pass files, so a finished run can play an interrupted one
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(cfg))
    env = {**cluster.env, "PYTHONPATH": str(WORKERS), "MPLBACKEND": "Agg"}
    return subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                          capture_output=True, text=True, env=env, timeout=600)


def _jobs(cluster) -> list[str]:
    res = subprocess.run(["sacct", "-c", "-n", "-X", "-o", "JobID,JobName%40,State"], capture_output=True,
                         text=True, env=cluster.env)
    # only the pipeline's own arrays: the session's cluster also ran the launcher tests' jobs
    return [line for line in res.stdout.splitlines() if re.search(r"ichain-data-(map|decide)-", line)]


def test_slurm_executor_end_to_end_and_resume(slurm, tmp_path, golden):
    python = runtime_python("data")
    corpus = tmp_path / "corpus"
    subprocess.run([str(python), "-m", "datapipe", "demo", str(corpus), "--docs", "40"],
                   env={**os.environ, "PYTHONPATH": str(WORKERS)}, check=True, capture_output=True)
    out = tmp_path / "out"
    res = _run(slurm, out, corpus)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["docs_kept"] > 30 and rep["malformed"] == 4
    assert "slurm: 3 job arrays, submitted" in res.stdout
    runs = sorted((out / "_work" / "datatrove").iterdir())
    assert [r.name for r in runs] == ["00-map-0", "01-decide-0", "02-map-1"]
    n_shards = len(json.loads((out / "_work" / "shards.json").read_text()))
    assert len(list((runs[0] / "completions").iterdir())) == n_shards
    jobs = _jobs(slurm)
    assert jobs and all("COMPLETED" in j for j in jobs), jobs
    # the launch scripts datatrove rendered and submitted, with machine paths normalised
    prefix = str(Path(str(python)).parent.parent)
    text = ""
    for r in runs:
        script = (r / "launch_script.slurm").read_text()
        script = script.replace(str(tmp_path), "<TMP>").replace(prefix, "<RUNTIME>")
        text += f"# ---- {r.name}/launch_script.slurm\n" + re.sub(r"\n\s*\n", "\n", script) + "\n"
    golden.check("data/slurm_launch_scripts.txt", text)

    # re-run: every task has its completion file, so nothing is submitted again
    clean = {f.name: f.read_bytes() for f in (out / "clean").glob("*.jsonl")}
    res = _run(slurm, out, corpus)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "submitted none (all complete)" in res.stdout
    assert len(_jobs(slurm)) == len(jobs)

    # an interrupted final pass: one shard's task lost its completion file and output -> only it reruns
    victim = sorted((runs[2] / "completions").iterdir())[0]
    sid = json.loads((out / "_work" / "shards.json").read_text())[int(victim.name)]["id"]
    victim.unlink()
    (out / "_work" / "markers" / "p1" / f"{sid}.done").unlink()
    (out / "clean" / f"{sid}.jsonl").unlink()
    res = _run(slurm, out, corpus)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads((runs[2] / "ranks_to_run.json").read_text()) == [int(victim.name)]
    assert len(_jobs(slurm)) == len(jobs) + 1
    assert {f.name: f.read_bytes() for f in (out / "clean").glob("*.jsonl")} == clean


def test_failing_slurm_task_fails_the_run(slurm, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "hello"}\n')
    out = tmp_path / "out"
    # the job's environment setup fails: the first array fails, the arrays after it can never start
    bad = tmp_path / "activate"
    bad.write_text("echo broken environment >&2; exit 3\n")
    cfg = {"out_dir": str(out), "inputs": [str(corpus)], "workers": 1, "executor": "slurm", "outputs": ["clean"],
           "slurm": {"partition": "debug", "time": "00:05:00", "venv_path": str(bad)}}
    out.mkdir()
    (out / "pipeline.json").write_text(json.dumps(cfg))
    env = {**slurm.env, "PYTHONPATH": str(WORKERS)}
    res = subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode != 0
    assert "can never start" in res.stderr or "did not complete tasks" in res.stderr, res.stderr[-2000:]
    assert not (out / "report.json").exists()
