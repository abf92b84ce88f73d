"""A private single-node Slurm cluster on loopback, for tests (recipe: shared/SLURM-LOCAL.md).

Runs as root without systemd: slurmctld and slurmd in their own sessions, all state under one
directory, auth/none (a throw-away cluster reachable only on 127.0.0.1). Clients find it through
SLURM_CONF, which `env` returns.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "sacct", "srun")


def why_unavailable() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return ("Slurm is not installed (missing " + ", ".join(missing) +
                "): apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "a private Slurm cluster needs root (SlurmUser=root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _hardware(self) -> str:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
        keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
        found = dict(re.findall(r"(\w+)=(\S+)", out))
        return " ".join(f"{k}={found[k]}" for k in keys if k in found)

    def write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "logs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=ichaintest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/logs/slurmctld.log
SlurmdLogFile={r}/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/jobcomp.txt
ReturnToService=2
SchedulerParameters=batch_sched_delay=0
MinJobAge=600
NodeName={self.node} NodeHostname=localhost NodeAddr=127.0.0.1 {self._hardware()} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 30.0) -> None:
        self.write_conf()
        for argv in (["slurmctld", "-D", "-f", str(self.conf)],
                     ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)]):
            log = open(self.root / "logs" / f"{argv[0]}.out", "ab")  # noqa: SIM115 - lives as long as the daemon
            self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=log,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not all(_alive(p.pid) for p in self.procs):
                break
            res = subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], env=self.env,
                                 capture_output=True, text=True, timeout=30)
            state = res.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        logs = "".join((self.root / "logs" / f).read_text(errors="replace")[-1500:]
                       for f in ("slurmctld.log", "slurmd.log") if (self.root / "logs" / f).exists())
        self.stop()
        raise RuntimeError(f"local Slurm did not become idle (node state {state!r}); logs:\n{logs}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--partition=debug"], env=self.env, capture_output=True, timeout=30)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._kill_stepds()
        self.procs.clear()

    def _kill_stepds(self) -> None:
        """slurmstepd daemons of this cluster (they outlive slurmd): found by their spool directory."""
        spool = str(self.root / "spool")
        for proc_dir in Path("/proc").iterdir():
            if not proc_dir.name.isdigit():
                continue
            try:
                if "slurmstepd" not in (proc_dir / "cmdline").read_text():
                    continue
                if spool not in (proc_dir / "environ").read_bytes().decode(errors="replace") and \
                        not os.readlink(proc_dir / "cwd").startswith(spool):
                    continue
                os.kill(int(proc_dir.name), signal.SIGKILL)
            except OSError:
                continue
