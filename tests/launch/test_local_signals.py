"""The local launcher for real: SIGTERM to `ichain` reaches the job's whole process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from launch_helpers import FAKE


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _chain(tmp_path: Path, launcher: str = "local") -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(f"name: sig\nworkdir: wd\ndevice: cpu\nlauncher: {{kind: {launcher}}}\n"
                    f"stages:\n  data: {{plugin: {FAKE}:ECHO}}\n")
    return path


def test_sigterm_kills_the_job_group_and_records_interrupted(tmp_path):
    chain = _chain(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "internlm_chain", "run", str(chain)],
                            env={**os.environ, "FAKE_CHILD_DATA": "300"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child_file = tmp_path / "wd" / ".staging" / "data" / "child.pid"
    _wait(lambda: child_file.exists() and child_file.read_text())
    child = int(child_file.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "data: job echo was interrupted; re-run to resume" in err
    _wait(lambda: not _alive(child), timeout=15)  # the grandchild, in the job's group, is gone too
    rec = json.loads((tmp_path / "wd" / "manifest.json").read_text())["stages"]["data"]
    assert rec["state"] == "interrupted"
    assert not (tmp_path / "wd" / ".ichain.lock").exists()


def test_exit_code_and_output_reach_log_and_console(tmp_path):
    chain = _chain(tmp_path, "torchrun")  # a non-distributed job under torchrun runs as a local one
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "run", str(chain)],
                         env={**os.environ, "FAKE_FAIL_DATA": "5"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "data: failing on purpose" in res.stderr and "exited with code 5" in res.stderr
    log = tmp_path / "wd" / ".staging" / "data" / "logs" / "echo.log"
    assert "data: failing on purpose" in log.read_text()
