"""`ichain env sync`: build a runtime's venv from its lock with uv, atomically and only when needed.

The env is built in a hidden folder next to its target (`envs/.<runtime>.sync-<pid>`), as a
relocatable venv, and renamed into place only after `uv pip sync` succeeded and the sync record was
written: a failed or killed sync leaves the previous env (or none), never one that looks synced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.runtimes import pipconf
from internlm_chain.runtimes.locks import lock_digest, parse_lock, variant_of
from internlm_chain.runtimes.state import SYNC_FORMAT, EnvState, env_state, envs_root, write_marker

# Progress: report(text, kind) with kind "step" (what ichain is doing) or "output" (an installer line).
Report = Callable[[str, str], None]
TAIL_LINES = 25


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise SyncError("", "uv is not installed (it is a dependency of internlm-chain: "
                            "reinstall the package)") from None
        return found


def uv_version(uv: str) -> str:
    try:
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.split()[1] if len(out.split()) > 1 else out.strip()


def default_python() -> str:
    """The interpreter running ichain when uv and the locks support it, else whatever 3.11 uv finds."""
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return sys.executable
    return "3.11"


@dataclass
class SyncResult:
    state: EnvState
    action: str  # "synced" | "up to date"
    seconds: float = 0.0
    record: dict = field(default_factory=dict)


class SyncError(Exception):
    def __init__(self, runtime: str, message: str, package: str | None = None, tail: list[str] | None = None,
                 log: Path | None = None):
        self.runtime, self.message, self.package, self.tail, self.log = runtime, message, package, tail or [], log
        super().__init__(message)


@contextlib.contextmanager
def _exclusive(path: Path, report: Report) -> Iterator[None]:
    """One sync per runtime at a time (two `ichain` processes, or a test run beside a user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("waiting for another `ichain env sync` of this runtime to finish", "step")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_leftovers(root: Path, runtime: str) -> None:
    for stale in list(root.glob(f".{runtime}.sync-*")) + list(root.glob(f".{runtime}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], log: Path, report: Report) -> tuple[int, list[str]]:
    """Run the installer, teeing its output to `log` and `report`; returns (exit code, last lines)."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                errors="replace")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                line = line.rstrip()
                if line and not line.startswith("Activate with:"):
                    tail.append(line)
                    report(line, "output")
            return proc.wait(), list(tail)
        except BaseException:
            proc.kill()
            proc.wait()
            raise


_FAILING = [
    re.compile(r"no (?:matching )?versions? of ([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the (?:package registry|provided package locations)"),
    re.compile(r"[Ff]ailed to (?:build|download|fetch|prepare|install|extract)[^`]*`([A-Za-z0-9][A-Za-z0-9._-]*)"),
    re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==\S+ (?:has no wheels|is incompatible|cannot be used)"),
]


def failing_package(lines: list[str], known: set[str]) -> str | None:
    """The package an installer error is about: from uv's phrasing, else the first pinned name cited."""
    from internlm_chain.runtimes.locks import normalize

    errors = [ln for ln in lines if not ln.lstrip().startswith(("+", "-", "Resolved", "Prepared", "Using"))]
    for pattern in _FAILING:
        for line in errors:
            m = pattern.search(line)
            if m and normalize(m.group(1)) in known:
                return normalize(m.group(1))
    for line in errors:
        for token in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", line):
            if normalize(token) in known and ("error" in line.lower() or "because" in line.lower()):
                return normalize(token)
    return None


def sync_runtime(runtime: str, variant: str, cache: Path, *, force: bool = False, python: str | None = None,
                 report: Report = lambda _text, _kind: None, locks_root: Path | None = None) -> SyncResult:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", runtime):
        raise SyncError(runtime, f"'{runtime}' is not a runtime name")
    root = envs_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{runtime}.lock", report):
        state = env_state(runtime, variant, cache, locks_root)
        if state.lock is None:
            raise SyncError(runtime, f"no lock is shipped for runtime '{runtime}' ({variant})")
        if state.synced and not force:
            return SyncResult(state, "up to date", record=state.marker or {})
        _remove_leftovers(root, runtime)
        lock = parse_lock(state.lock, runtime, variant_of(state.lock))
        if lock.problems:
            raise SyncError(runtime, "the lock holds lines that are not exact pins", tail=lock.problems[:TAIL_LINES])
        started = time.monotonic()
        digest = lock_digest(state.lock)  # read before installing: the record must describe what was installed
        uv = uv_bin()
        settings = pipconf.uv_env_from_pip()
        env = {**os.environ, **settings.env}
        env.pop("VIRTUAL_ENV", None)  # uv would otherwise warn about (or target) the caller's venv
        logs = root / ".logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{runtime}.log"
        log.write_text("".join(f"# {n}\n" for n in settings.notes), encoding="utf-8")
        tmp = root / f".{runtime}.sync-{os.getpid()}"
        try:
            interpreter = python or default_python()
            report(f"creating venv ({interpreter})", "step")
            rc, tail = _run([uv, "venv", "--relocatable", "--no-project", "--color", "never", "--python",
                             interpreter, str(tmp)], env, log, report)
            if rc != 0:
                raise SyncError(runtime, f"uv could not create a Python {interpreter} venv", tail=tail, log=log)
            report(f"installing {len(lock.pins)} pinned packages from {state.lock.name}", "step")
            rc, tail = _run([uv, "pip", "sync", str(state.lock), "--python", str(tmp / "bin" / "python"),
                             "--color", "never", "--no-progress", "--compile-bytecode"], env, log, report)
            if rc != 0:
                pkg = failing_package(tail, set(lock.pins))
                what = f"could not install {pkg}=={lock.pins[pkg].version}" if pkg else "failed"
                raise SyncError(runtime, f"uv pip sync {what}", package=pkg, tail=tail, log=log)
            record = {
                "format": SYNC_FORMAT, "runtime": runtime, "variant": variant, "lock_variant": lock.variant, "lock": str(state.lock),
                "lock_hash": digest, "python": _venv_python_version(tmp), "uv": uv_version(uv),
                "synced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "packages": len(lock.pins),
                "seconds": round(time.monotonic() - started, 1), "index_settings": settings.env,
            }
            write_marker(tmp, record)
            _swap_into_place(tmp, state.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return SyncResult(env_state(runtime, variant, cache, locks_root), "synced",
                          time.monotonic() - started, record)


def _venv_python_version(env: Path) -> str:
    try:
        for line in (env / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version_info", "version"):
                return value.strip()
    except OSError:
        pass
    return "unknown"


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the new env over the old one; the old one is renamed aside first and removed after."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
