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

from internlm_chain.runtimes import hosttorch, pipconf
from internlm_chain.runtimes.hosttorch import Host, HostTorchError
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


def mode_mismatch(marker: dict | None, host: Host | None) -> str:
    """Why an env synced in one mode does not satisfy a request for the other ("" when it does)."""
    have = (marker or {}).get("mode", "lock")
    if host is None:
        return "it was built on a host's torch; a full sync was asked" if have == "host-torch" else ""
    if have != "host-torch":
        return "it holds the lock's own torch; --host-torch was asked"
    was = (marker or {}).get("host") or {}
    if was.get("python") != host.python:
        return f"it was built on {was.get('python')}, not {host.python}"
    if was.get("torch") != host.torch:
        return f"the host's torch changed ({was.get('torch')} → {host.torch})"
    return ""


def sync_runtime(runtime: str, variant: str, cache: Path, *, force: bool = False, python: str | None = None,
                 report: Report = lambda _text, _kind: None, locks_root: Path | None = None,
                 host: Host | None = None) -> SyncResult:
    """Build the runtime from its lock; with `host` (probed by hosttorch.probe_host), on that host's torch."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", runtime):
        raise SyncError(runtime, f"'{runtime}' is not a runtime name")
    root = envs_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{runtime}.lock", report):
        state = env_state(runtime, variant, cache, locks_root)
        if state.lock is None:
            raise SyncError(runtime, f"no lock is shipped for runtime '{runtime}' ({variant})")
        mismatch = mode_mismatch(state.marker, host) if state.synced else ""
        if state.synced and not force and not mismatch:
            return SyncResult(state, "up to date", record=state.marker or {})
        if mismatch:
            report(f"rebuilding: {mismatch}", "step")
        _remove_leftovers(root, runtime)
        lock = parse_lock(state.lock, runtime, variant_of(state.lock))
        if lock.problems:
            raise SyncError(runtime, "the lock holds lines that are not exact pins", tail=lock.problems[:TAIL_LINES])
        host_plan = hosttorch.plan(lock, host.dists, host.torch) if host else None
        if host_plan and host_plan.problems:
            raise HostTorchError(f"{runtime}: " + "; ".join(host_plan.problems),
                                 f"host {host.python} has torch {host.torch}")
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
            interpreter = host.python if host else (python or default_python())
            report(f"creating venv ({interpreter})", "step")
            rc, tail = _run([uv, "venv", "--relocatable", "--no-project", "--color", "never", "--python",
                             interpreter, str(tmp)], env, log, report)
            if rc != 0:
                raise SyncError(runtime, f"uv could not create a Python {interpreter} venv", tail=tail, log=log)
            requirements, count = state.lock, len(lock.pins)
            if host_plan is not None:
                # what uv installs: the lock minus the host's torch family (kept beside the log to inspect)
                requirements = logs / f"{runtime}.host-torch.txt"
                requirements.write_text(f"# {state.lock.name} for host-torch (host: {host.python}, torch "
                                        f"{host.torch})\n" + "".join(r + "\n" for r in host_plan.requirements),
                                        encoding="utf-8")
                count = len(host_plan.requirements)
                report(f"{len(host_plan.from_host)} torch/CUDA pins come from the host (torch {host.torch})", "step")
                for name, version in host_plan.replaced.items():
                    report(f"{name}=={version} instead of {lock.pins[name].version}: the locked one cannot import "
                           "beside the host's triton", "step")
            report(f"installing {count} pinned packages from {state.lock.name}", "step")
            rc, tail = _run([uv, "pip", "sync", str(requirements), "--python", str(tmp / "bin" / "python"),
                             "--color", "never", "--no-progress", "--compile-bytecode"], env, log, report)
            if rc != 0:
                pins = {**{n: p.version for n, p in lock.pins.items()},
                        **({**host_plan.paired, **host_plan.replaced} if host_plan else {})}
                pkg = failing_package(tail, set(pins))
                what = f"could not install {pkg}=={pins[pkg]}" if pkg else "failed"
                if host_plan and pkg in host_plan.paired:
                    what += f" (the release paired with the host's torch {host.torch})"
                raise SyncError(runtime, f"uv pip sync {what}", package=pkg, tail=tail, log=log)
            record = {
                "format": SYNC_FORMAT, "runtime": runtime, "variant": variant, "lock_variant": lock.variant, "lock": str(state.lock),
                "lock_hash": digest, "python": _venv_python_version(tmp), "uv": uv_version(uv),
                "synced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "packages": count,
                "seconds": round(time.monotonic() - started, 1), "index_settings": settings.env, "mode": "lock",
            }
            if host is not None and host_plan is not None:
                hosttorch.write_pth(tmp, host)
                report("checking that the runtime imports the host's torch", "step")
                record["mode"] = "host-torch"
                record["host"] = {**host.to_record(), "from_host": host_plan.from_host, "paired": host_plan.paired,
                                  "replaced": host_plan.replaced,
                                  **_check_host_torch(runtime, tmp, host, host_plan, log)}
            write_marker(tmp, record)
            _swap_into_place(tmp, state.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return SyncResult(env_state(runtime, variant, cache, locks_root), "synced",
                          time.monotonic() - started, record)


def _check_host_torch(runtime: str, env: Path, host: Host, plan: hosttorch.Plan, log: Path) -> dict:
    """Import torch (and the paired packages) in the new runtime: they must load, torch from the host."""
    from internlm_chain.runtimes.doctor import probe_interpreter

    modules = ("torch", *plan.paired)
    try:
        probe = probe_interpreter(str(env / "bin" / "python"), modules)
    except RuntimeError as exc:
        raise SyncError(runtime, f"the new runtime does not run: {exc}", log=log) from None
    bad = [f"`import {m}`: {r['error'][:300]}" for m, r in probe["imports"].items() if r["error"]]
    if bad:
        raise SyncError(runtime, "the runtime cannot use the host's torch: " + "; ".join(bad), log=log,
                        tail=bad)
    torch_file = probe["imports"]["torch"]["file"] or ""
    if not any(torch_file.startswith(d.rstrip("/") + "/") for d in host.site):
        raise SyncError(runtime, f"torch in the runtime resolves to {torch_file}, not to the host's "
                        f"site-packages ({', '.join(host.site)})", log=log)
    return {"torch_file": torch_file, "cuda": probe["imports"]["torch"].get("cuda")}


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
