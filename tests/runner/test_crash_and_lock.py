"""kill -9 in the middle of a stage, then resume; the workdir lock (live holder, stale holder)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runner_helpers import attempts, ichain, manifest


def start_run(chain: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "internlm_chain", "run", str(chain), "-q"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pred, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_stage_then_resume(fake_chain):
    chain = fake_chain({"data": "ECHO", "pretrain": "NEEDS_DATA"})
    wd = chain.parent / "wd"
    proc = start_run(chain, {"FAKE_SLEEP_PRETRAIN": "120"})
    staging = wd / ".staging" / "pretrain"
    wait_for(lambda: attempts(wd, "pretrain") == 1)
    job_pid = int((staging / "attempts.txt").read_text().split()[0])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.killpg(job_pid, signal.SIGKILL)  # its own process group: kill -9 of ichain does not reach it
    rec = manifest(wd)["stages"]["pretrain"]
    assert rec["state"] == "running" and rec["pid"] == proc.pid  # never marked done
    assert not (wd / "pretrain").exists()
    assert (wd / ".ichain.lock").read_text().split()[0] == str(proc.pid)  # left behind by the dead run
    row = {r["stage"]: r for r in json.loads(ichain("status", chain, "--json").stdout)}["pretrain"]
    assert row["state"] == "interrupted" and f"process {proc.pid} is gone" in row["detail"]

    again = ichain("run", chain, "--json")  # takes the stale lock over
    assert again.returncode == 0, again.stderr
    assert {s["stage"]: s["status"] for s in json.loads(again.stdout)["stages"]} == {
        "data": "up to date", "pretrain": "done"}
    # the same staging directory was reused: the first attempt's file is still there
    lines = (wd / "pretrain" / "attempts.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{job_pid} ")
    assert manifest(wd)["stages"]["pretrain"]["state"] == "done"
    assert not (wd / ".ichain.lock").exists()


def test_second_run_on_a_busy_workdir_names_the_holder(fake_chain):
    chain = fake_chain({"data": "ECHO"})
    wd = chain.parent / "wd"
    proc = start_run(chain, {"FAKE_SLEEP_DATA": "120"})
    try:
        wait_for(lambda: attempts(wd, "data") == 1)
        second = ichain("run", chain)
        assert second.returncode == 2
        assert f"workdir {wd} is in use by pid {proc.pid} on {socket.gethostname()}" in second.stderr
        assert second.stderr.count("error:") == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 130
    assert manifest(wd)["stages"]["data"]["state"] == "interrupted"


def test_stale_lock_of_a_dead_process_is_taken_over(fake_chain):
    chain = fake_chain({"data": "ECHO"})
    wd = chain.parent / "wd"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not alive(dead.pid)
    wd.mkdir()
    (wd / ".ichain.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    run = ichain("run", chain, "-q")
    assert run.returncode == 0, run.stderr
    assert not (wd / ".ichain.lock").exists()
