"""Quantise once: run `lmdeploy lite` into a scratch folder, publish it complete or not at all.

Runs inside the `lmdeploy` runtime (stdlib only; the deploy stage imports `is_complete` from here too):

    python deploy_quantize.py --out DIR --key KEY -- -m lmdeploy lite auto_awq MODEL --work-dir @WORK@ ...

The words after `--` run under this interpreter with `@WORK@` replaced by `.<DIR>.partial`, a folder
next to DIR that is wiped first. Only when the command exits 0 and left a loadable-looking model there
(config.json and weights) is a marker written into it — last, with the key, the file sizes and a content
hash — and the folder renamed to DIR in one step. So DIR exists only complete; a quantisation killed
midway leaves at most `.partial`, which the next run throws away. DIR already complete for KEY: nothing
runs (re-starting a server never re-quantises); DIR complete for another KEY (other inputs): replaced.
A DIR this worker did not write is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

MARKER = ".ichain-quantize.json"
WEIGHTS = (".safetensors", ".bin")
WORK = "@WORK@"


def log(msg: str) -> None:
    print(f"[quantize] {msg}", flush=True)


def read_marker(out: str) -> dict | None:
    try:
        with open(os.path.join(out, MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(out: str, key: str) -> bool:
    """DIR holds the finished quantisation for exactly these inputs, with every file it had then."""
    data = read_marker(out)
    if not data or data.get("key") != key or not isinstance(data.get("files"), dict) or not data["files"]:
        return False
    if "config.json" not in data["files"]:
        return False
    for rel, size in data["files"].items():
        try:
            if os.path.getsize(os.path.join(out, rel)) != size:
                return False
        except OSError:
            return False
    return True


def _files(root: str) -> dict[str, int]:
    found = {}
    for base, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if rel != MARKER and os.path.isfile(path):
                found[rel] = os.path.getsize(path)
    return found


def _content_hash(root: str, files: dict[str, int]) -> str:
    """sha256 over (relative name, sha256 of the file) in name order, as the chain hashes directories."""
    h = hashlib.sha256()
    for rel in sorted(files):
        f = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as fh:
            while chunk := fh.read(1 << 20):
                f.update(chunk)
        h.update(rel.encode() + b"\0")
        h.update(f.hexdigest().encode() + b"\0")
    return "sha256:" + h.hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_marker(work: str, data: dict) -> None:
    tmp = os.path.join(work, MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(work, MARKER))
    _fsync_dir(work)


def publish(work: str, out: str) -> None:
    """Swap the finished folder into place; a stale earlier result goes only afterwards."""
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    _fsync_dir(os.path.dirname(out))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    sep = argv.index("--")
    opts, command = argv[:sep], argv[sep + 1:]
    args = dict(zip(opts[::2], opts[1::2], strict=False))
    out, key = os.path.abspath(args.get("--out", "")), args.get("--key", "")
    if not args.get("--out") or not key or not command:
        print(__doc__, file=sys.stderr)
        return 2
    if is_complete(out, key):
        log(f"reusing the verified quantised model in {out} (same model, settings and calibration)")
        return 0
    if os.path.exists(out) and read_marker(out) is None and (not os.path.isdir(out) or os.listdir(out)):
        log(f"error: {out} exists and was not written by this step; refusing to replace it "
            "(choose another output folder)")
        return 2
    work = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.partial")
    if os.path.exists(work):
        log(f"removing an unfinished earlier attempt: {work}")
        shutil.rmtree(work)
    os.makedirs(work)
    argv_run = [sys.executable, *(w.replace(WORK, work) for w in command)]
    log("running: " + " ".join(argv_run))
    t0 = time.monotonic()
    code = subprocess.call(argv_run)
    if code != 0:
        log(f"error: the quantisation exited with code {code}; nothing was kept")
        shutil.rmtree(work, ignore_errors=True)
        return code if code > 0 else 1
    files = _files(work)
    if "config.json" not in files or not any(f.endswith(WEIGHTS) for f in files):
        log(f"error: the quantisation exited 0 but left no model in {work} (config.json + weights)")
        shutil.rmtree(work, ignore_errors=True)
        return 1
    _write_marker(work, {"key": key, "created": time.time(), "seconds": round(time.monotonic() - t0, 1),
                         "command": command, "files": files, "content": _content_hash(work, files)})
    publish(work, out)
    log(f"quantised model complete: {out} ({len(files)} files, {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
