"""Fingerprints: of a stage's inputs (what decides whether it must re-run) and of artifact content."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def stable_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_fingerprint(path: str | Path) -> str:
    """sha256 over a file, or over every file of a directory (relative names + contents), in order."""
    p = Path(path)
    if p.is_file():
        return "sha256:" + file_hash(p)
    if not p.is_dir():
        return ""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            if f.is_symlink() and not f.exists():
                continue
            h.update(str(f.relative_to(p)).encode() + b"\0")
            h.update(file_hash(f).encode() + b"\0")
    return "sha256:" + h.hexdigest()


def stage_fingerprint(stage: str, settings: dict, inputs: dict[str, str], lock_hash: str, version: str) -> str:
    return stable_hash({"stage": stage, "settings": settings, "inputs": inputs, "runtime_lock": lock_hash,
                        "version": version})


HASHED_FILE_LIMIT = 64 << 20  # larger files are identified by size and mtime (hashing GBs per run is too slow)
LISTED_ENTRIES_LIMIT = 20_000


def path_signature(path: Path) -> str:
    """What identifies a user file or folder named in the settings, cheaply enough to compute every run."""
    st = path.stat()
    if path.is_file():
        if st.st_size <= HASHED_FILE_LIMIT:
            return "sha256:" + file_hash(path)
        return f"stat:{st.st_size}:{st.st_mtime_ns}"
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            try:
                fst = f.stat()
            except OSError:
                continue
            entries.append((str(f.relative_to(path)), fst.st_size, fst.st_mtime_ns))
            if len(entries) >= LISTED_ENTRIES_LIMIT:
                return "listing:" + stable_hash(entries)
    return "listing:" + stable_hash(entries)


def settings_paths(value: Any, base: Path, skip: Path) -> dict[str, str]:
    """Signatures of the existing files/folders that string settings point at, outside `skip`.

    Editing a dataset or a tool file then re-runs the stage, although the setting's text is unchanged.
    Paths under the workdir (`skip`) are other stages' outputs: their fingerprints already count.
    """
    found: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, str) and 0 < len(v) < 4096 and "\n" not in v and ("/" in v or "." in v):
            # "tools/weather.py:Weather" names a file too
            for candidate in (v, v.rsplit(":", 1)[0]) if ":" in v else (v,):
                p = Path(os.path.expanduser(candidate))
                p = p if p.is_absolute() else base / p
                try:
                    real = p.resolve()
                    if not real.exists():
                        continue
                    if real != skip and skip not in real.parents:
                        found[str(real)] = path_signature(real)
                except (OSError, ValueError):
                    pass
                break

    walk(value)
    return found
