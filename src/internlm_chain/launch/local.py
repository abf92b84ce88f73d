"""Run a Job as a local process group: output to its log file and the console, signals forwarded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.launch.base import Launcher
from internlm_chain.stages.base import JobResult

GRACE_S = 10.0


def write_job_files(job: Job) -> None:
    for path, text in job.files.items():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def run_process(job: Job, quiet: bool = False) -> JobResult:
    """Start `job.argv` in its own process group; SIGINT/SIGTERM to us reach the whole group."""
    write_job_files(job)
    Path(job.cwd).mkdir(parents=True, exist_ok=True)
    log_path = Path(job.log) if job.log else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **job.env}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(job.argv, cwd=job.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        from internlm_chain.errors import ChainError, Problem

        raise ChainError(Problem(f"{job.id}: cannot start '{job.argv[0]}': no such program",
                                 hint="is its runtime synced? run `ichain env sync`")) from None
    interrupted: list[int] = []

    def forward(signum, _frame):
        interrupted.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        with open(log_path, "ab") if log_path else open(os.devnull, "wb") as log:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if not quiet:
                    sys.stderr.buffer.write(line)
                    sys.stderr.flush()
        returncode = _wait_group(proc, bool(interrupted))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = "interrupted" if interrupted else ("done" if returncode == 0 else "failed")
    return JobResult(job=job, returncode=returncode, log=str(log_path) if log_path else None,
                     duration_s=time.monotonic() - start, state=state)


def _wait_group(proc: subprocess.Popen, interrupted: bool) -> int:
    try:
        return proc.wait(timeout=GRACE_S if interrupted else None)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


class LocalLauncher(Launcher):
    kind = "local"

    def run(self, job: Job, quiet: bool = False) -> JobResult:
        return run_process(job, quiet=quiet)
