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
