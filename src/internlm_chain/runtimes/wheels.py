"""`ichain env wheels`: every wheel a host needs to sync runtimes (and install ichain) with no index.

For an offline host, collected elsewhere with `pip download` for the host's Python and platform: per
runtime its lock's exact pins (`--no-deps`: a lock is already complete), with `--host-torch` the lock minus
what the host's torch provides (hosttorch.plan), plus ichain's own dependency closure. One folder, deduped
across runtimes; `UV_FIND_LINKS=DIR UV_NO_INDEX=1` (gpu_smoke's --wheels) then installs from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.runtimes import hosttorch
from internlm_chain.runtimes.locks import lock_path, normalize, parse_lock, variant_of

Report = Callable[[str], None]
MANIFEST = "wheels.json"
# The packages ichain itself needs on the host beyond its declared dependencies: setuptools builds the
# editable install (`pip install -e .` uses build isolation, so the host's own setuptools is not used).
BUILD_REQUIREMENTS = ("setuptools>=68",)


class WheelsError(Exception):
    def __init__(self, message: str, tail: list[str] | None = None):
        self.message, self.tail = message, tail or []
        super().__init__(message)


@dataclass
class Target:
    python_version: str = "3.12"
    platforms: tuple[str, ...] = ("manylinux_2_28_x86_64",)

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp"]
        for p in expand_platforms(self.platforms):
            args += ["--platform", p]
        return args

    def describe(self) -> str:
        return f"cp{self.python_version.replace('.', '')} {', '.join(self.platforms)}"


def expand_platforms(platforms: tuple[str, ...]) -> list[str]:
    """`manylinux_2_28_x86_64` also accepts every older manylinux wheel (pip only matches tags it is given)."""
    out: list[str] = []
    for p in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", p)
        if not m:
            out.append(p)
            continue
        glibc, arch = int(m.group(1)), m.group(2)
        out += [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        out += [f"{name}_{arch}" for minor, name in legacy.items() if glibc >= minor]
    return list(dict.fromkeys(out))


@dataclass
class RuntimeWheels:
    runtime: str
    variant: str
    requirements: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # pins with no wheel for the target
    notes: list[str] = field(default_factory=list)
    bytes: int = 0


@dataclass
class Collection:
    dest: Path
    target: Target
    runtimes: list[RuntimeWheels] = field(default_factory=list)
    total_bytes: int = 0

    @property
    def missing(self) -> list[str]:
        return [f"{r.runtime}: {m}" for r in self.runtimes for m in r.missing]

    def to_dict(self) -> dict:
        return {"dest": str(self.dest), "python_version": self.target.python_version,
                "platforms": list(self.target.platforms), "total_bytes": self.total_bytes,
                "runtimes": [{"runtime": r.runtime, "variant": r.variant, "files": r.files, "missing": r.missing,
                              "notes": r.notes, "bytes": r.bytes, "requirements": len(r.requirements)}
                             for r in self.runtimes]}


def runtime_requirements(runtime: str, variant: str, host_torch: bool, torch_version: str | None,
                         locks_root: Path | None = None) -> RuntimeWheels:
    path = lock_path(runtime, variant, locks_root)
    if path is None:
        raise WheelsError(f"no lock is shipped for runtime '{runtime}' ({variant})")
    lock = parse_lock(path, runtime, variant_of(path))
    if lock.problems:
        raise WheelsError(f"{path.name} holds lines that are not exact pins", lock.problems[:10])
    rw = RuntimeWheels(runtime, variant)
    if not host_torch:
        rw.requirements = [f"{n}=={p.version}" + (f" ; {p.marker}" if p.marker else "") for n, p in lock.pins.items()]
        return rw
    # the host provides torch, triton and the CUDA libraries; torchvision/torchaudio only when it has them,
    # which a wheel collection cannot know: with the host's torch version named, the paired releases are collected
    host = {"torch": torch_version or "?", "triton": "?"}
    plan = hosttorch.plan(lock, host, torch_version)
    rw.requirements = plan.requirements
    for name in plan.paired:
        rw.notes.append(f"{name}=={plan.paired[name]} collected to pair with the host's torch {torch_version}")
    for name, version in plan.replaced.items():
        rw.notes.append(f"{name}=={version} collected instead of the locked {lock.pins[name].version} "
                        "(which cannot import beside triton >= 3.2)")
    for problem in plan.problems:
        rw.notes.append(problem + " (not collected: the host must have it)")
    return rw


_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)")
_GOT = re.compile(r"^(?:Saved |File was already downloaded )(.+\.whl)\s*$")


def _pip_download(requirements: list[str], dest: Path, target: Target, *, deps: bool,
                  report: Report) -> tuple[list[str], list[str]]:
    """pip download into `dest`; a pin with no wheel for the target is set aside and the rest retried.

    Returns (wheel file names, pins without a wheel).
    """
    remaining, missing = list(requirements), []
    while remaining:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("".join(r + "\n" for r in remaining))
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
                "-d", str(dest), *target.pip_args(), "-r", fh.name]
        if not deps:
            argv.insert(argv.index("-d"), "--no-deps")
        try:
            res = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        except OSError as exc:
            raise WheelsError(f"cannot run pip ({sys.executable} -m pip): {exc}") from None
        finally:
            Path(fh.name).unlink(missing_ok=True)
        lines = (res.stdout + res.stderr).splitlines()
        if res.returncode == 0:
            got = [Path(m.group(1)).name for m in (_GOT.match(ln.strip()) for ln in lines) if m]
            return list(dict.fromkeys(got)), missing
        m = next((_NO_MATCH.search(line) for line in lines if _NO_MATCH.search(line)), None)
        bad = normalize(m.group(1)) if m else None
        keep = [r for r in remaining if normalize(re.split(r"[=<>!~; \[]", r, maxsplit=1)[0]) != bad]
        if not bad or len(keep) == len(remaining):
            tail = [ln for ln in lines if "is ignored: it is neither" not in ln][-15:]
            if "No module named pip" in res.stderr:
                raise WheelsError(f"pip is not installed in {sys.executable} (ichain uses it to download wheels)")
            raise WheelsError("pip download failed", tail)
        missing.append(f"{bad}=={m.group(2)}")
        report(f"no wheel of {bad}=={m.group(2)} for {target.describe()}; continuing without it")
        remaining = keep
    return [], missing


def _build_pure(pins: list[str], dest: Path, report: Report) -> tuple[list[str], list[str]]:
    """Build wheels here for sdist-only pins; keep those that come out pure Python (`py3-none-any`).

    Returns (built wheel names, pins still without a wheel). A wheel with compiled code would be built for
    this machine's Python, not the target's, so it is discarded and the pin stays missing.
    """
    built, still = [], []
    for pin in pins:
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                                  "--no-binary", pin.split("==")[0], "-w", tmp, pin],
                                 capture_output=True, text=True, errors="replace")
            wheels = sorted(Path(tmp).glob("*.whl"))
            if res.returncode == 0 and len(wheels) == 1 and wheels[0].name.endswith("-none-any.whl"):
                (dest / wheels[0].name).write_bytes(wheels[0].read_bytes())
                built.append(wheels[0].name)
                report(f"built {wheels[0].name} from the sdist of {pin} (pure Python)")
            else:
                still.append(pin)
                why = "not pure Python" if wheels else "the build failed"
                report(f"could not make a portable wheel of {pin} from its sdist ({why})")
    return built, still


def ichain_requirements() -> list[str]:
    """internlm-chain's own dependencies (not its extras), as installed here."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("internlm-chain") or []
    except PackageNotFoundError:
        raise WheelsError("internlm-chain is not installed here, so its dependencies are unknown") from None
    return [r.split(";")[0].strip() for r in reqs if "extra ==" not in r] + list(BUILD_REQUIREMENTS)


def collect(runtimes: list[tuple[str, str]], dest: Path, target: Target, *, host_torch: bool = False,
            torch_version: str | None = None, ichain: bool = True, build: bool = True,
            report: Report = lambda _t: None, locks_root: Path | None = None) -> Collection:
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    col = Collection(dest, target)
    wanted = [runtime_requirements(rt, v, host_torch, torch_version, locks_root) for rt, v in runtimes]
    for rw in wanted:
        report(f"{rw.runtime} ({rw.variant}): {len(rw.requirements)} pins")
        rw.files, rw.missing = _pip_download(rw.requirements, dest, target, deps=False, report=report)
        if rw.missing and build:
            built, rw.missing = _build_pure(rw.missing, dest, report)
            rw.files += built
            rw.notes += [f"{f}: built here from its sdist" for f in built]
        col.runtimes.append(rw)
    if ichain:
        rw = RuntimeWheels("ichain", "-", ichain_requirements())
        report(f"ichain: {', '.join(rw.requirements)} and their dependencies")
        rw.files, rw.missing = _pip_download(rw.requirements, dest, target, deps=True, report=report)
        col.runtimes.append(rw)
    every: set[str] = set()
    for rw in col.runtimes:
        rw.bytes = sum((dest / f).stat().st_size for f in rw.files)
        every.update(rw.files)
    col.total_bytes = sum((dest / f).stat().st_size for f in every)
    (dest / MANIFEST).write_text(json.dumps(col.to_dict(), indent=1) + "\n", encoding="utf-8")
    return col
