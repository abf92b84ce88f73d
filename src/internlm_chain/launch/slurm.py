"""Slurm: a Job becomes an sbatch script; `run` submits it, follows it and maps its final state.

The rendered Job's argv is `sbatch --parsable SCRIPT` and the script is in `job.files`, so
`--dry-run --show-files` prints exactly what will be submitted.

Distributed jobs start one of two ways (the Job's `slurm_launch`):
- `torchrun` (default): one task per node, each running `torch.distributed.run` with
  `--node-rank $SLURM_NODEID` and the first node of the allocation as master;
- `srun`: one task per process (nodes × nproc_per_node), the program initialises itself from the
  SLURM_* variables (XTuner/InternEvo `--launcher slurm`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.errors import ChainError, Problem, StageFailed
from internlm_chain.launch.base import Launcher, split_interpreter, torchrun_args
from internlm_chain.launch.local import write_job_files
from internlm_chain.stages.base import JobResult

POLL_S = 0.2
DONE_STATES = {"COMPLETED"}
INTERRUPTED_STATES = {"CANCELLED", "PREEMPTED", "REVOKED"}  # anything else that ended is a failure


@dataclass
class SlurmState:
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... or UNKNOWN
    finished: bool
    returncode: int | None = None

    @property
    def stage_state(self) -> str:
        if not self.finished:
            return "submitted"
        if self.state in DONE_STATES and not self.returncode:
            return "done"
        return "interrupted" if self.state in INTERRUPTED_STATES else "failed"


def script_path(job: Job) -> Path:
    return _logs_dir(job).parent / "slurm" / f"{job.name}.sbatch"


def output_pattern(job: Job) -> Path:
    """Where Slurm writes the job's stdout+stderr (`%j` = job id); streamed into `job.log`."""
    return _logs_dir(job) / f"{job.name}.slurm-%j.out"


def _logs_dir(job: Job) -> Path:
    return Path(job.log).parent if job.log else Path(job.cwd) / "logs"


class SlurmLauncher(Launcher):
    kind = "slurm"

    def __init__(self, settings, workdir=None):
        super().__init__(settings, workdir)
        self._last_id: str | None = None  # with `wait: false`, each next job waits for the previous one

    # ---- render (pure) ---------------------------------------------------------------------------
    def render(self, job: Job) -> Job:
        script = script_path(job)
        return job.model_copy(update={
            "argv": ["sbatch", "--parsable", str(script)],
            "env": {},  # exported inside the script, where the job runs
            "files": {**job.files, str(script): self.script(job)},
        })

    def script(self, job: Job) -> str:
        s = self.settings.slurm
        distributed = job.distributed
        nodes = self.settings.nnodes if distributed else 1
        per_node = self.settings.nproc_per_node if distributed and job.slurm_launch == "srun" else 1
        gpus = s.gpus_per_node if s.gpus_per_node is not None else job.resources.gpus_per_node
        cpus = s.cpus_per_task or job.resources.cpus_per_task
        mem = s.mem or job.resources.mem
        time_limit = s.time or job.resources.time
        out = str(output_pattern(job))
        lines = ["#!/bin/bash", f"# internlm-chain job {job.id}" + (f" — {job.description}" if job.description else "")]
        options = [f"--job-name=ichain-{job.stage}-{job.name}", f"--nodes={nodes}", f"--ntasks-per-node={per_node}"]
        if gpus:
            options.append(f"--gpus-per-node={gpus}")
        for flag, value in (("cpus-per-task", cpus), ("mem", mem), ("time", time_limit),
                            ("partition", s.partition), ("account", s.account), ("qos", s.qos)):
            if value:
                options.append(f"--{flag}={value}")
        options += [f"--output={out}", f"--error={out}", *s.extra_args]
        lines += [f"#SBATCH {opt}" for opt in options]
        lines += ["set -eu", f"cd {shlex.quote(job.cwd)}"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(job.env.items())]
        srun = ["srun", "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks-per-node={per_node}"]
        if distributed:
            lines += ['MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"',
                      "export MASTER_ADDR", f"export MASTER_PORT={self.master_port(job)}"]
        if distributed and job.slurm_launch == "torchrun":
            python, rest = split_interpreter(job)
            # $SLURM_NODEID differs per node, so each task's shell expands it, not the batch script's
            args = torchrun_args(self.settings, "$MASTER_PORT", node_rank="$SLURM_NODEID",
                                 master_addr="$MASTER_ADDR", rdzv_id=f"ichain-{job.stage}-$SLURM_JOB_ID")
            inner = " ".join([*map(shlex.quote, python), *map(_expanding, args), *map(shlex.quote, rest)])
            lines.append(shlex.join(srun) + " bash -c " + shlex.quote("exec " + inner))
        else:
            lines.append(shlex.join([*srun, *job.argv]))
        return "\n".join(lines) + "\n"

    # ---- run -------------------------------------------------------------------------------------
    def run(self, job: Job, quiet: bool = False, on_submit: Callable[[str], None] | None = None) -> JobResult:
        write_job_files(job)
        Path(job.cwd).mkdir(parents=True, exist_ok=True)
        _logs_dir(job).mkdir(parents=True, exist_ok=True)
        argv = list(job.argv)
        if not self.settings.slurm.wait and self._last_id:
            argv.insert(2, f"--dependency=afterok:{self._last_id}")
        job_id = submit(argv, job)
        self._last_id = job_id
        if on_submit:
            on_submit(job_id)
        if not self.settings.slurm.wait:
            return JobResult(job=job, returncode=0, log=job.log, state="submitted")
        return self.follow(job, job_id, quiet=quiet)

    def follow(self, job: Job, job_id: str, quiet: bool = False) -> JobResult:
        """Poll until the job has left the queue, streaming its output; Ctrl-C/SIGTERM cancel it."""
        start = time.monotonic()
        out_path = Path(str(output_pattern(job)).replace("%j", job_id))
        log_path = Path(job.log) if job.log else None
        interrupted: list[int] = []

        def cancel(signum, _frame):
            interrupted.append(signum)
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, cancel)
        offset = 0
        try:
            with open(log_path, "ab") if log_path else open(os.devnull, "wb") as log:
                while True:
                    gone = queue_state(job_id) is None
                    offset = _stream(out_path, offset, log, quiet)
                    if gone:
                        break
                    time.sleep(POLL_S)
                final = final_state(job_id)
                time.sleep(POLL_S)  # the output file may be flushed after the job left the queue
                _stream(out_path, offset, log, quiet)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        state = "interrupted" if interrupted else final.stage_state
        code = final.returncode if final.returncode is not None else (0 if state == "done" else 1)
        return JobResult(job=job, returncode=code, log=job.log, duration_s=time.monotonic() - start, state=state)


def _expanding(word: str) -> str:
    """A launcher-made word: double-quoted so the task's shell expands its `$VARS` (no user text here)."""
    return f'"{word}"' if "$" in word else shlex.quote(word)


def _stream(path: Path, offset: int, log, quiet: bool) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if data:
        log.write(data)
        log.flush()
        if not quiet:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
    return offset + len(data)


def _slurm(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ChainError(Problem(f"`{argv[0]}` not found: the slurm launcher needs the Slurm client commands",
                                 hint="run on a Slurm login node, or set launcher.kind: local")) from None


def submit(argv: list[str], job: Job) -> str:
    res = _slurm(argv)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise StageFailed(Problem(f"{job.id}: sbatch refused the job: {msg[-1] if msg else 'exit ' + str(res.returncode)}",
                                  hint=f"script: {argv[-1]}"))
    return res.stdout.strip().split(";")[0]


def queue_state(job_id: str) -> str | None:
    """The job's state while Slurm still lists it as queued/running; None once it has left."""
    res = _slurm(["squeue", "-h", "-j", job_id, "-o", "%T"])
    state = res.stdout.strip()
    if res.returncode != 0 or not state:
        return None
    if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        return None  # ended, only shown until MinJobAge
    return state


def _exit_code(text: str) -> int | None:
    """Slurm's `code:signal` → a shell-style code (128 + signal when killed by one)."""
    try:
        code, _, sig = text.strip().partition(":")
        code_i, sig_i = int(code), int(sig or 0)
    except ValueError:
        return None
    return code_i if code_i or not sig_i else 128 + sig_i


def final_state(job_id: str) -> SlurmState:
    """How an ended job ended: accounting (sacct), else the controller's memory (scontrol, until
    MinJobAge), else the job-completion log (`sacct -c`)."""
    state = _sacct_state(["sacct", "-X", "-j", job_id, "-n", "-P", "-o", "State,ExitCode"])
    state = state or _scontrol_state(job_id)
    state = state or _sacct_state(["sacct", "-c", "-j", job_id, "-n", "-P", "-o", "State,ExitCode"])
    return state or SlurmState("UNKNOWN", True, None)


def _sacct_state(argv: list[str]) -> SlurmState | None:
    res = _slurm(argv)
    rows = [r.split("|") for r in res.stdout.strip().splitlines() if "|" in r]
    if res.returncode != 0 or not rows or not rows[-1][0].strip():
        return None
    word = rows[-1][0].split()[0].rstrip("+")  # "CANCELLED by 0" → CANCELLED
    if word in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED"):
        return SlurmState(word, False)
    return SlurmState(word, True, _exit_code(rows[-1][1]))


def _scontrol_state(job_id: str) -> SlurmState | None:
    res = _slurm(["scontrol", "show", "job", job_id])
    if res.returncode != 0:
        return None
    fields = dict(tok.split("=", 1) for tok in res.stdout.split() if "=" in tok)
    state = fields.get("JobState")
    if not state:
        return None
    if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"):
        return SlurmState(state, False)
    return SlurmState(state, True, _exit_code(fields.get("ExitCode", "")))


def job_state(job_id: str) -> SlurmState:
    """For `ichain status` and collecting submitted stages: queued/running, or how it ended."""
    queued = queue_state(job_id)
    if queued is not None:
        return SlurmState(queued, False)
    return final_state(job_id)


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _slurm(["scancel", *job_ids])
