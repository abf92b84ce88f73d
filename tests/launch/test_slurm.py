"""Slurm end to end on a real single-node cluster (tests/launch/slurm_cluster.py): submit, follow,
map the final state, submit-only + status + collect."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launch_helpers import FAKE

pytestmark = pytest.mark.slurm


def _chain(tmp_path: Path, attr: str = "ECHO", slurm: str = "{}", extra: str = "") -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(f"name: sl\nworkdir: wd\ndevice: cpu\nlauncher: {{kind: slurm, slurm: {slurm}{extra}}}\n"
                    f"stages:\n  data: {{plugin: {FAKE}:{attr}}}\n  pretrain: {{plugin: {FAKE}:NEEDS_DATA}}\n")
    return path


def _ichain(slurm, *args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "internlm_chain", *map(str, args)], capture_output=True,
                          text=True, env={**slurm.env, **(env or {})}, timeout=timeout)


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "wd" / "manifest.json").read_text())


def test_job_runs_on_slurm_and_the_stage_is_published(slurm, tmp_path):
    chain = _chain(tmp_path)
    res = _ichain(slurm, "run", chain, "--only", "data", "--verbose")
    assert res.returncode == 0, res.stderr
    assert "$ cd " in res.stderr and "sbatch --parsable" in res.stderr
    assert "data: start" in res.stderr  # the job's output file streamed to the console
    rec = _manifest(tmp_path)["stages"]["data"]
    assert rec["state"] == "done" and len(rec["slurm_jobs"]) == 1
    job_id = rec["slurm_jobs"][0]
    data = tmp_path / "wd" / "data"
    assert (data / "result.txt").read_text().startswith("data ")
    assert (data / f"logs/echo.slurm-{job_id}.out").exists()
    assert "data: done" in (data / "logs" / "echo.log").read_text()
    assert (data / "slurm" / "echo.sbatch").read_text().startswith("#!/bin/bash")


def test_failing_job_maps_to_failed_with_its_exit_code(slurm, tmp_path):
    chain = _chain(tmp_path)
    res = _ichain(slurm, "run", chain, "--only", "data", "-q", env={"FAKE_FAIL_DATA": "3"})
    assert res.returncode == 1
    rec = _manifest(tmp_path)["stages"]["data"]
    assert rec["state"] == "failed"
    assert rec["error"] == f"job echo (slurm job {rec['slurm_jobs'][0]}) exited with code 3"
    assert "data: failing on purpose" in Path(rec["logs"][0]).read_text()
    assert not (tmp_path / "wd" / "data").exists()


def test_srun_launch_starts_one_task_per_process(slurm, tmp_path):
    chain = _chain(tmp_path, "SRUN_TASKS", extra=", nproc_per_node: 2")
    res = _ichain(slurm, "run", chain, "--only", "data", "-q")
    assert res.returncode == 0, res.stderr
    ranks = sorted(line.split("rank=")[1] for line in
                   (tmp_path / "wd" / "data" / "attempts.txt").read_text().splitlines())
    assert ranks == ["0", "1"]


def test_submit_only_then_status_then_collect(slurm, tmp_path):
    chain = _chain(tmp_path, slurm="{wait: false}")
    res = _ichain(slurm, "run", chain, "--json", env={"FAKE_SLEEP_DATA": "2"})
    assert res.returncode == 0, res.stderr
    stages = {s["stage"]: s["status"] for s in json.loads(res.stdout)["stages"]}
    assert stages == {"data": "submitted", "pretrain": "waiting"}
    rec = _manifest(tmp_path)["stages"]["data"]
    assert rec["state"] == "submitted" and rec["slurm_jobs"]
    row = json.loads(_ichain(slurm, "status", chain, "--json").stdout)[0]
    assert row["state"] == "submitted" and row["slurm"][rec["slurm_jobs"][0]] in ("PENDING", "RUNNING")
    deadline = time.monotonic() + 60
    while row["state"] == "submitted":
        assert time.monotonic() < deadline, row
        time.sleep(0.3)
        row = json.loads(_ichain(slurm, "status", chain, "--json").stdout)[0]
    assert row["state"] == "finished" and "collects the outputs" in row["detail"]
    assert not (tmp_path / "wd" / "data").exists()  # not published until collected
    res = _ichain(slurm, "run", chain, "--only", "data", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["stages"][0]["status"] == "done"
    rec2 = _manifest(tmp_path)["stages"]["data"]
    assert rec2["state"] == "done" and rec2["slurm_jobs"] == rec["slurm_jobs"]  # collected, not re-run
    assert "data: done" in (tmp_path / "wd" / "data" / "logs" / "echo.log").read_text()


def test_sbatch_refusal_is_a_clear_error(slurm, tmp_path):
    chain = _chain(tmp_path)
    res = _ichain(slurm, "run", chain, "--only", "data", "--partition", "nosuchpartition")
    assert res.returncode == 1
    assert "sbatch refused the job" in res.stderr and "Traceback" not in res.stderr
    assert _manifest(tmp_path)["stages"]["data"]["state"] == "failed"
