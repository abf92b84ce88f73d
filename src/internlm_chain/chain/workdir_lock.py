"""One `ichain run` per workdir: a lock file naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from internlm_chain.errors import ChainError, Problem
from internlm_chain.procs import pid_alive


class WorkdirLock:
    def __init__(self, workdir: Path):
        self.path = workdir / ".ichain.lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder and holder[1] == socket.gethostname() and not pid_alive(holder[0]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                who = f"pid {holder[0]} on {holder[1]}" if holder else "another process"
                raise ChainError(Problem(
                    f"workdir {self.path.parent} is in use by {who}",
                    hint=f"wait for it to finish, or remove {self.path} if that process is gone")) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self.held = True
            return
        raise ChainError(Problem(f"could not take the workdir lock {self.path}"))

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split()[:2]
            return int(pid), host
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
