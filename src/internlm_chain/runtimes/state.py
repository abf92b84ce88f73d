"""What is on disk for a runtime: its env folder, the sync record inside it, and whether it is current."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from internlm_chain.runtimes.locks import lock_digest, lock_path, variant_of

MARKER = ".ichain-runtime.json"


# 2: bytecode precompiled at sync. Runs may set PYTHONDONTWRITEBYTECODE (CI does), and then every
#    process recompiles what it imports: XTuner's imports took 20+ s instead of about 5 s.
SYNC_FORMAT = 2
# The record's "mode" ("lock", or "host-torch" with a "host" section: interpreter, its site dirs, torch
# version, the pins taken from it) came without a format bump: a record without it is a full-lock env, which
# is exactly what format 2 meant, so the envs synced so far stay current.


def envs_root(cache: Path) -> Path:
    return Path(cache) / "envs"


def read_marker(env: Path) -> dict | None:
    try:
        data = json.loads((Path(env) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(env: Path, record: dict) -> None:
    path = Path(env) / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class EnvState:
    runtime: str
    variant: str  # the variant asked for
    path: Path
    lock: Path | None  # the lock that variant uses (None: no lock shipped)
    marker: dict | None
    synced: bool  # the env exists, its record matches the lock, and its interpreter is there
    reason: str  # why it is not synced ("" when it is)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def lock_variant(self) -> str | None:
        return variant_of(self.lock) if self.lock else None

    @property
    def mode(self) -> str | None:
        """"lock" (everything from the lock) or "host-torch"; None when not synced at all."""
        return (self.marker or {}).get("mode", "lock") if self.marker else None

    @property
    def host_torch(self) -> str | None:
        return ((self.marker or {}).get("host") or {}).get("torch") if self.mode == "host-torch" else None

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "variant": self.variant, "lock_variant": self.lock_variant,
                "path": str(self.path), "lock": str(self.lock) if self.lock else None,
                "synced": self.synced, "reason": self.reason, "mode": self.mode, "host_torch": self.host_torch,
                "lock_hash": (self.marker or {}).get("lock_hash"), "record": self.marker}


def env_state(runtime: str, variant: str, cache: Path, locks_root: Path | None = None) -> EnvState:
    path = envs_root(cache) / runtime
    lock = lock_path(runtime, variant, locks_root)
    marker = read_marker(path)
    if lock is None:
        reason = f"no lock shipped for {runtime} ({variant})"
    elif not path.exists():
        reason = "not synced"
    elif marker is None:
        reason = f"{path} exists but was not made by `ichain env sync` (no {MARKER})"
    elif marker.get("lock_hash") != lock_digest(lock):
        reason = f"lock changed since the last sync ({lock.name})"
    elif marker.get("format", 1) < SYNC_FORMAT:
        reason = "made by an older `ichain env sync` (without precompiled bytecode)"
    elif not (path / "bin" / "python").exists():
        reason = "its interpreter is gone (the base Python was removed?)"
    elif marker.get("mode") == "host-torch":
        from internlm_chain.runtimes.hosttorch import record_reason

        reason = record_reason(marker)
    else:
        reason = ""
    return EnvState(runtime, variant, path, lock, marker, synced=not reason, reason=reason)


def dir_size(path: Path) -> int:
    """Bytes on disk, counting hard-linked files (uv links from its cache) once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
