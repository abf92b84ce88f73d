"""Run a Job as a local process group: output to its log file and the console, signals forwarded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.launch.base import Launcher
from internlm_chain.stages.base import JobResult

GRACE_S = 10.0  # after a forwarded Ctrl-C/SIGTERM, how long the group may take to exit before SIGKILL


def write_job_files(job: Job) -> None:
    for path, text in job.files.items():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(job: Job, quiet: bool = False) -> JobResult:
    """Start `job.argv` in its own process group; SIGINT/SIGTERM to us reach the whole group.

    A second signal, or a group still alive GRACE_S after the first, gets SIGKILL: a child that
    ignores SIGTERM (or a grandchild holding the output pipe) must not keep `ichain` waiting forever.
    """
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
    except (FileNotFoundError, PermissionError) as exc:
        from internlm_chain.errors import ChainError, Problem

        why = "no such program" if isinstance(exc, FileNotFoundError) else "permission denied"
        raise ChainError(Problem(f"{job.id}: cannot start '{job.argv[0]}': {why}",
                                 hint=f"is its runtime synced? run `ichain env sync {job.runtime or ''}`".rstrip()
                                 )) from None
    interrupted: list[int] = []
    killer: list[threading.Timer] = []

    def forward(signum, _frame):
        interrupted.append(signum)
        if len(interrupted) > 1:
            _killpg(proc.pid, signal.SIGKILL)
            return
        _killpg(proc.pid, signum)
        timer = threading.Timer(GRACE_S, _killpg, (proc.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()
        killer.append(timer)

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
        returncode = proc.wait()
        if interrupted:
            _killpg(proc.pid, signal.SIGKILL)  # grandchildren left behind by a leader that exited
    finally:
        for timer in killer:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = "interrupted" if interrupted else ("done" if returncode == 0 else "failed")
    return JobResult(job=job, returncode=returncode, log=str(log_path) if log_path else None,
                     duration_s=time.monotonic() - start, state=state)


class LocalLauncher(Launcher):
    kind = "local"

    def run(self, job: Job, quiet: bool = False, on_submit: Callable[[str], None] | None = None) -> JobResult:
        return run_process(job, quiet=quiet)
