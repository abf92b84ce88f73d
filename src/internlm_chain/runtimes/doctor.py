"""`ichain env doctor`: does each runtime's interpreter run, match its lock, and import its upstream tool?"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from internlm_chain.runtimes.locks import Lock, Pin, parse_lock, variant_of
from internlm_chain.runtimes.state import env_state

PROBE = Path(__file__).with_name("probe_worker.py")
PROBE_TIMEOUT_S = 300  # importing torch-based tools cold can take a while on a busy machine
LOW_DISK_BYTES = 10 * 2**30


@dataclass
class Finding:
    level: str  # "ok" | "warn" | "error"
    message: str


@dataclass
class PackageRow:
    name: str
    locked: str
    installed: str | None
    ok: bool


@dataclass
class RuntimeReport:
    runtime: str
    variant: str
    kind: str  # env | python | image
    target: str  # env folder, interpreter path, or image name
    lock: str | None = None
    python: str | None = None
    findings: list[Finding] = field(default_factory=list)
    key_packages: list[PackageRow] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    mode: str = "lock"  # env built from the whole lock, or "host-torch"
    host_torch: str | None = None  # the host's torch version for a host-torch env

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def add(self, level: str, message: str) -> None:
        self.findings.append(Finding(level, message))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _same_version(a: str, b: str) -> bool:
    def norm(v: str) -> str:
        v = v.strip().lower()
        public, plus, local = v.partition("+")
        public = re.sub(r"(\.0+)+$", "", public)
        return public + plus + local

    return norm(a) == norm(b)


def probe_interpreter(python: str, modules: tuple[str, ...]) -> dict:
    """Run the stdlib-only probe in `python`; raises RuntimeError with the reason when it cannot."""
    try:
        res = subprocess.run([python, str(PROBE), *modules], capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RuntimeError(f"{python} does not exist") from None
    except PermissionError:
        raise RuntimeError(f"{python} is not executable") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{python} did not finish the probe in {PROBE_TIMEOUT_S} s") from None
    except OSError as exc:
        raise RuntimeError(f"{python} does not run: {exc}") from None
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("ICHAIN-PROBE "):
            return json.loads(line[len("ICHAIN-PROBE "):])
    last = (res.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{python} exited {res.returncode}: {last}")


def compare(lock: Lock, installed: dict[str, str], report: RuntimeReport, host: dict | None = None) -> None:
    """Every pin against what is installed; the lock's key packages become the report's table.

    `host`: a host-torch record's "host" section; the pins it took from the host are not the lock's (the
    host's versions are shown instead), and the packages paired with the host's torch have their own version.
    """
    wrong, missing = [], []
    from_host = set((host or {}).get("from_host") or {}) - set((host or {}).get("paired") or {})
    paired = {**((host or {}).get("paired") or {}), **((host or {}).get("replaced") or {})}
    for name, pin in lock.pins.items():
        if name in from_host:
            continue
        have = installed.get(name)
        if name in paired:
            pin = Pin(name, paired[name], pin.marker, pin.line)
        if have is None:
            if not pin.marker:  # a pin behind an environment marker may rightly be absent
                missing.append(f"{name}=={pin.version}")
        elif not _same_version(have, pin.version):
            wrong.append(f"{name} {have} (lock: {pin.version})")
    for name in lock.keys:
        pin = lock.pins.get(name)
        if pin:
            have = installed.get(name)
            if name in from_host:
                report.key_packages.append(PackageRow(name, f"{pin.version}, from host", have, have is not None))
                continue
            want = paired.get(name, pin.version)
            report.key_packages.append(PackageRow(name, want, have, have is not None and _same_version(have, want)))
    if wrong:
        report.add("error", f"{len(wrong)} package(s) differ from the lock: " + ", ".join(wrong[:8])
                   + (" …" if len(wrong) > 8 else ""))
    if missing:
        report.add("error", f"{len(missing)} locked package(s) not installed: " + ", ".join(missing[:8])
                   + (" …" if len(missing) > 8 else ""))
    if not wrong and not missing:
        n = len(lock.pins) - len(from_host)
        report.add("ok", f"all {n} locked packages at their pinned versions"
                   + (f" ({len(from_host)} torch/CUDA pins taken from the host instead)" if from_host else ""))


def check_interpreter(report: RuntimeReport, python: str, lock: Lock | None, host: dict | None = None) -> None:
    modules = lock.imports if lock else ()
    if host and "torch" not in modules:
        modules = ("torch", *modules)  # a host-torch runtime is only as good as its view of the host's torch
    try:
        probe = probe_interpreter(python, modules)
    except RuntimeError as exc:
        report.add("error", f"interpreter does not run: {exc}")
        return
    report.python = probe["python"]
    report.add("ok", f"interpreter runs: Python {probe['python']} ({python})")
    if lock is None:
        return
    compare(lock, probe["dists"], report, host)
    for module, res in probe["imports"].items():
        if res["error"]:
            report.add("error", f"`import {module}` fails: {res['error'][:300]}")
        elif host and module == "torch":
            site = host.get("site") or []
            where = res.get("file") or ""
            if any(where.startswith(d.rstrip("/") + "/") for d in site):
                report.add("ok", f"`import torch` works: {res.get('version')} from the host ({where})")
            else:
                report.add("error", f"`import torch` resolves to {where}, not to the host's site-packages "
                                    f"({', '.join(site)})")
        else:
            report.add("ok", f"`import {module}` works ({res['seconds']:.1f} s)")
    if not modules:
        report.add("warn", "no import probe for this runtime (add `# ichain-import: MODULE` to its lock)")


def check_env(runtime: str, variant: str, cache: Path, locks_root: Path | None = None) -> RuntimeReport:
    state = env_state(runtime, variant, cache, locks_root)
    report = RuntimeReport(runtime, variant, "env", str(state.path), lock=str(state.lock) if state.lock else None)
    if state.lock is None:
        report.add("error", f"no lock is shipped for runtime '{runtime}' ({variant})")
        return report
    lock = parse_lock(state.lock, runtime, variant_of(state.lock))
    if not state.path.exists():
        report.add("error", f"not synced: {state.path} is missing (run `ichain env sync {runtime}`)")
        return report
    if not state.synced:
        report.add("error", f"{state.reason} (run `ichain env sync {runtime}`)")
    else:
        when = (state.marker or {}).get("synced_at", "?")
        report.add("ok", f"synced from {state.lock.name} at {when}")
    host = (state.marker or {}).get("host") if state.mode == "host-torch" else None
    if host:
        report.mode, report.host_torch = "host-torch", host.get("torch")
        report.add("ok", f"built on the host's torch {host.get('torch')} (CUDA {host.get('cuda') or 'none'}) from "
                         f"{host.get('python')}; {len(host.get('from_host') or {})} torch/CUDA pins of the lock "
                         "come from the host")
        if host.get("paired"):
            report.add("ok", "installed to pair with the host's torch: "
                       + ", ".join(f"{k}=={v}" for k, v in host["paired"].items()))
        if host.get("replaced"):
            report.add("ok", "installed instead of the locked version, which cannot import beside the host's "
                       "triton: " + ", ".join(f"{k}=={v}" for k, v in host["replaced"].items()))
    if state.python.exists():
        check_interpreter(report, str(state.python), lock, host)
    return report


def check_python(runtime: str, variant: str, python: str, locks_root: Path | None = None) -> RuntimeReport:
    """A stage's `runtime: {python: …}`: the interpreter is the user's, the versions must still match."""
    from internlm_chain.runtimes.locks import lock_path

    lock_file = lock_path(runtime, variant, locks_root)
    report = RuntimeReport(runtime, variant, "python", python, lock=str(lock_file) if lock_file else None)
    lock = parse_lock(lock_file, runtime, variant_of(lock_file)) if lock_file else None
    if lock is None:
        report.add("warn", f"no lock shipped for '{runtime}' ({variant}): versions not checked")
    check_interpreter(report, python, lock)
    return report


def check_image(runtime: str, variant: str, image: str, engine: str) -> RuntimeReport:
    report = RuntimeReport(runtime, variant, "image", image)
    found = shutil.which(engine)
    if found:
        report.add("ok", f"{engine} found ({found}); the image's contents are not checked")
    else:
        report.add("error", f"`{engine}` is not on PATH, so image {image} cannot run")
    if image.endswith((".sif", ".simg")) and not Path(image).exists():
        report.add("error", f"image file {image} does not exist")
    return report


# ---- the machine ---------------------------------------------------------------------------------
@dataclass
class MachineReport:
    gpus: list[dict] = field(default_factory=list)
    driver: str | None = None
    cuda: str | None = None
    cache: str = ""
    free_bytes: int | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def check_machine(cache: Path, want_cuda: bool) -> MachineReport:
    from internlm_chain.runtimes.machine import query_gpus

    report = MachineReport(cache=str(cache))
    found = query_gpus()
    report.gpus, report.driver, report.cuda = found.gpus, found.driver, found.cuda
    if found.error:
        report.findings.append(Finding("warn", f"nvidia-smi failed: {found.error}"))
    if report.gpus:
        report.findings.append(Finding("ok", f"{len(report.gpus)} GPU(s), driver {report.driver}, "
                                             f"CUDA {report.cuda or '?'}"))
    elif want_cuda:
        report.findings.append(Finding("warn", "a CUDA runtime was checked but no NVIDIA GPU is visible"))
    else:
        report.findings.append(Finding("ok", "no NVIDIA GPU (CPU mode)"))
    probe = Path(cache)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    report.free_bytes = shutil.disk_usage(probe).free
    from internlm_chain.runtimes.state import human_size

    level = "warn" if report.free_bytes < LOW_DISK_BYTES else "ok"
    report.findings.append(Finding(level, f"{human_size(report.free_bytes)} free for {cache}"))
    return report
