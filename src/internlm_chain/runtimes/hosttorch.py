"""Runtimes built on a host interpreter's torch: `ichain env sync RUNTIME --python PY --host-torch`.

For machines whose torch comes with the machine (a vendor or cluster image, an offline GPU box): the
runtime is a fresh venv on PY's Python, PY's site-packages are appended to its sys.path, and the lock is
installed WITHOUT the packages that must come from the host's torch build (`HOST_NAMES` below).

Why a `.pth` file and not `venv --system-site-packages`: that flag exposes the *base* installation's
site-packages. When PY is itself a venv (`/opt/torch/.venv/bin/python3`), torch lives in PY's venv and
would stay invisible. The line `import site; site.addsitedir(DIR)` appends each of PY's site dirs after
the runtime's own (and runs their .pth files, as PY itself would), so the lock's own pins (numpy,
transformers, ...) shadow the host's copies and the host only fills in torch and its CUDA stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.runtimes.locks import Lock

# Taken from the host, never from the lock (PEP 503 names):
#   torch                     the point of the mode.
#   triton, pytorch-triton    torch pins the exact triton it was built with (torch 2.11.0 → triton 3.6.0).
#   nvidia-*, cuda-*          the CUDA libraries of torch's CUDA build (nvidia-cublas..., cuda-toolkit,
#                             cuda-bindings, cuda-pathfinder). The host's torch loads its own; the lock's
#                             copies (built for the lock's torch) are gigabytes of dead weight at best and
#                             shadow the host's at worst. This also drops CUDA libraries a lock pins for
#                             another component: LMDeploy's turbomind links CUDA 12 (nvidia-*-cu12), so on a
#                             host whose torch is a CUDA 13 build turbomind cannot load (its pytorch engine can).
#   torchvision, torchaudio   C++ extensions compiled against one torch release and CUDA major: the lock's
#                             (paired with the lock's torch) would not load beside the host's. The host's copy
#                             is used; when the host has none, the release paired with the host's torch is
#                             installed instead (PyPI's build of it, which matches PyPI's torch build).
HOST_NAMES = frozenset({"torch", "triton", "pytorch-triton"})
HOST_PREFIXES = ("nvidia-", "cuda-")
PAIRED = ("torchvision", "torchaudio")
PTH_NAME = "_ichain_host_torch.pth"

# Locked versions that cannot work beside a host's triton >= 3.2, with the drop-in patch release that can.
# bitsandbytes 0.45.0 (XTuner 0.2.0's exact pin) imports `triton.ops` whenever triton is installed, and
# triton 3.2 removed that module: `import bitsandbytes` fails, and with it every peft LoRA (peft imports
# bitsandbytes when it is installed). 0.45.1 carries its own copy (bitsandbytes PR #1413). Checked on this
# project's CPU machine with triton 3.6.0 + peft 0.14.0: get_peft_model(LoRA) fails with 0.45.0
# ("No module named 'triton.ops'") and works with 0.45.1.
TRITON_FIXES = {("bitsandbytes", "0.45.0"): "0.45.1"}


class HostTorchError(Exception):
    """A host-torch sync cannot start (no torch on the host, the lock needs what the host lacks): exit 2."""

    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint
        super().__init__(message)


def from_host(name: str) -> bool:
    return name in HOST_NAMES or name in PAIRED or name.startswith(HOST_PREFIXES)


def public(version: str) -> str:
    return version.split("+", 1)[0]


def paired_version(package: str, torch_version: str) -> str | None:
    """The torchvision / torchaudio release built for `torch_version` (2.Y.Z → 0.(Y+15).Z / 2.Y.Z)."""
    m = re.match(r"^2\.(\d+)\.(\d+)", public(torch_version))
    if not m or int(m.group(1)) < 1:
        return None
    minor, patch = int(m.group(1)), int(m.group(2))
    if package == "torchvision":
        return f"0.{minor + 15}.{patch}"
    if package == "torchaudio":
        return f"2.{minor}.{patch}"
    return None


@dataclass
class Host:
    """What a host interpreter offers (from probe_worker run in it)."""

    python: str  # as given (absolute path)
    python_version: str
    site: list[str]  # its site-packages folders, in its sys.path order
    dists: dict[str, str]  # normalized name → version (first on its sys.path wins)
    torch: str
    cuda: str | None = None

    def to_record(self) -> dict:
        return {"python": self.python, "python_version": self.python_version, "site": self.site,
                "torch": self.torch, "cuda": self.cuda}


def probe_host(python: str) -> Host:
    """What PY offers; HostTorchError when it does not run or has no torch.

    torch is found by its metadata, not imported (that takes seconds, and a no-op sync must stay fast);
    every sync that builds a runtime imports it there, through the runtime, before calling it done.
    """
    from internlm_chain.runtimes.doctor import probe_interpreter

    path = Path(python).expanduser()
    if not path.is_absolute() or not path.exists():
        raise HostTorchError(f"--python {python}: no such interpreter",
                             "--host-torch needs the path of the interpreter that has torch, e.g. "
                             "/opt/torch/.venv/bin/python3")
    try:
        probe = probe_interpreter(str(path), ())
    except RuntimeError as exc:
        raise HostTorchError(f"--python {python} does not run: {exc}") from None
    site = list(probe.get("site") or [])
    torch = probe["dists"].get("torch")
    if not torch:
        raise HostTorchError(f"{python} has no torch (no torch distribution in {', '.join(site) or 'its sys.path'})",
                             "--host-torch builds runtimes on the host's torch: install torch there, or "
                             "sync without --host-torch")
    return Host(python=str(path), python_version=probe["python"], site=site, dists=probe["dists"], torch=torch,
                cuda=_torch_cuda(probe.get("dist_paths", {}).get("torch", "")))


def _torch_cuda(dist_info: str) -> str | None:
    """torch.version.cuda, read from torch/version.py beside the dist-info (no import)."""
    if not dist_info:
        return None
    try:
        text = (Path(dist_info).parent / "torch" / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


@dataclass
class Plan:
    """The lock as a host-torch runtime installs it."""

    requirements: list[str] = field(default_factory=list)  # lines for `uv pip sync`
    from_host: dict[str, str] = field(default_factory=dict)  # locked name → locked version, taken from host
    paired: dict[str, str] = field(default_factory=dict)  # name → version installed to match host torch
    replaced: dict[str, str] = field(default_factory=dict)  # name → version installed instead of the lock's
    problems: list[str] = field(default_factory=list)  # what the lock needs and the host lacks


def plan(lock: Lock, host_dists: dict[str, str], torch_version: str | None) -> Plan:
    """Split the lock's pins: those installed into the runtime, those the host provides.

    `host_dists` are the host's packages; `torch_version` its torch (None: unknown, e.g. collecting
    wheels without naming the host's torch).
    """
    out = Plan()
    triton = host_dists.get("triton") or host_dists.get("pytorch-triton")
    new_triton = bool(triton) and (triton == "?" or _at_least(triton, (3, 2)))
    for name, pin in lock.pins.items():
        marker = f" ; {pin.marker}" if pin.marker else ""
        if not from_host(name):
            fixed = TRITON_FIXES.get((name, pin.version)) if new_triton else None
            if fixed:
                out.replaced[name] = fixed
            out.requirements.append(f"{name}=={fixed or pin.version}{marker}")
            continue
        out.from_host[name] = pin.version
        if name in host_dists:
            continue
        if name in PAIRED:
            paired = paired_version(name, torch_version) if torch_version else None
            if paired:
                out.paired[name] = paired
                out.requirements.append(f"{name}=={paired}{marker}")
            elif torch_version:
                out.problems.append(f"the lock needs {name} (=={pin.version} for its own torch), the host has none, "
                                    f"and no {name} release is known to pair with torch {torch_version}")
            else:
                out.problems.append(f"the lock needs {name}: name the host's torch version so the {name} "
                                    "release built for it is collected")
        elif name in ("triton", "pytorch-triton") and not {"triton", "pytorch-triton"} & set(host_dists):
            out.problems.append(f"the lock needs {name} (=={pin.version}), which must be the one the host's torch "
                                "was built with, and the host has none")
    return out


def _at_least(version: str, floor: tuple[int, ...]) -> bool:
    parts = tuple(int(x) for x in re.findall(r"\d+", public(version))[:len(floor)])
    return parts >= floor


def site_packages(env: Path, python_version: str) -> Path:
    major_minor = ".".join(python_version.split(".")[:2])
    return Path(env) / "lib" / f"python{major_minor}" / "site-packages"


def write_pth(env: Path, host: Host) -> Path:
    path = site_packages(env, host.python_version) / PTH_NAME
    path.write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in host.site), encoding="utf-8")
    return path


def torch_on_host(site: list[str]) -> str | None:
    """The host's torch version, read from its dist-info (no interpreter start: the no-op check stays fast)."""
    for folder in site:
        for info in sorted(Path(folder).glob("torch-*.dist-info")):
            m = re.fullmatch(r"torch-(.+)\.dist-info", info.name)
            if m:
                return m.group(1)
    return None


def record_reason(record: dict) -> str:
    """Why a host-torch runtime no longer matches its host ("" when it does)."""
    host = record.get("host") or {}
    python = host.get("python")
    if not python or not Path(python).exists():
        return f"its host interpreter {python} is gone"
    now = torch_on_host(host.get("site") or [])
    if now is None:
        return f"the host {python} no longer has torch"
    if now != host.get("torch"):
        return f"the host's torch changed ({host.get('torch')} → {now})"
    return ""
