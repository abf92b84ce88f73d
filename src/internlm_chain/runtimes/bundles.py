"""Split a folder of wheels into bundles of at most N MiB, and join them back (stdlib only).

For hosts that receive files in limited portions (a machine whose every call may carry at most 64 MiB):
`split` packs the folder's files into numbered bundle folders; a file bigger than a bundle is cut into
parts. Every bundle carries the full MANIFEST.json (sizes, sha256, which parts make which file), so `join`
can run on the host before ichain is installed, with any Python:

    python3 src/internlm_chain/runtimes/bundles.py split WHEELS OUT --max-mib 60
    python3 src/internlm_chain/runtimes/bundles.py join OUT WHEELS      # on the host; checks every sha256

`join` is idempotent (files already joined are kept) and names the bundles still missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

MANIFEST = "MANIFEST.json"
RESERVE = 512 * 1024  # room left in every bundle for its MANIFEST.json


class BundleError(Exception):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (bundles then cost no disk), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def split(src: Path, out: Path, max_mib: float, names: list[str] | None = None) -> list[Path]:
    """Pack the files directly in `src` (or only `names`) into `out/01`, `out/02`, ...; returns the bundles."""
    src, out = Path(src), Path(out)
    capacity = int(max_mib * 2**20) - RESERVE
    if capacity < 2**20:
        raise BundleError(f"--max-mib {max_mib} is too small (at least {(2**20 + RESERVE) / 2**20:.1f})")
    if names is None:
        names = [p.name for p in src.iterdir() if p.is_file() and p.name != MANIFEST]
    names = sorted(set(names))
    if not names:
        raise BundleError(f"{src} holds no files to bundle")
    files: dict[str, dict] = {}
    items: list[tuple[int, str, str, int]] = []  # (size, item name, source file, offset)
    for name in names:
        size = (src / name).stat().st_size
        entry = {"size": size, "sha256": sha256(src / name), "parts": []}
        if size <= capacity:
            items.append((size, name, name, 0))
        else:
            count = -(-size // capacity)
            for i in range(count):
                part = f"{name}.part{i + 1:02d}-of-{count:02d}"
                entry["parts"].append(part)
                items.append((min(capacity, size - i * capacity), part, name, i * capacity))
        files[name] = entry
    bins: list[list[tuple[int, str, str, int]]] = []
    free: list[int] = []
    for item in sorted(items, key=lambda it: (-it[0], it[1])):  # first fit, largest first
        for i, room in enumerate(free):
            if item[0] <= room:
                bins[i].append(item)
                free[i] -= item[0]
                break
        else:
            bins.append([item])
            free.append(capacity - item[0])
    if out.exists():
        if any(out.iterdir()) and not any(out.glob(f"*/{MANIFEST}")):
            raise BundleError(f"{out} exists and is not a bundle folder; give an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = {"format": 1, "max_mib": max_mib, "files": files,
                "bundles": {f"{i + 1:02d}": sorted(it[1] for it in b) for i, b in enumerate(bins)}}
    folders = []
    for i, b in enumerate(bins):
        folder = out / f"{i + 1:02d}"
        folder.mkdir()
        for size, item, source, offset in b:
            if item == source:
                _place(src / source, folder / item)
            else:
                with open(src / source, "rb") as fin, open(folder / item, "wb") as fout:
                    fin.seek(offset)
                    left = size
                    while left:
                        block = fin.read(min(left, 1 << 20))
                        fout.write(block)
                        left -= len(block)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        folders.append(folder)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return folders


def bundle_dirs(root: Path) -> list[Path]:
    """The bundle folders under `root` (or `root` itself when it is one)."""
    root = Path(root)
    if (root / MANIFEST).is_file() and not any(root.glob(f"*/{MANIFEST}")):
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))


def join(root: Path, dest: Path) -> list[str]:
    """Reassemble every file of the bundles under `root` into `dest`; returns the names written.

    Raises BundleError naming the missing bundles when some are not there (yet).
    """
    dirs = bundle_dirs(root)
    if not dirs:
        raise BundleError(f"no bundles under {root} (folders holding {MANIFEST})")
    manifest = json.loads((dirs[0] / MANIFEST).read_text(encoding="utf-8"))
    where: dict[str, Path] = {}
    for d in dirs:
        for p in d.iterdir():
            where.setdefault(p.name, p)
    missing_items = [it for items in manifest["bundles"].values() for it in items if it not in where]
    if missing_items:
        absent = [b for b, items in manifest["bundles"].items() if any(it not in where for it in items)]
        raise BundleError(f"bundle(s) {', '.join(absent)} of {len(manifest['bundles'])} are missing under {root} "
                          f"({len(missing_items)} file(s) or part(s), e.g. {missing_items[0]})")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry in sorted(manifest["files"].items()):
        target = dest / name
        if target.is_file() and target.stat().st_size == entry["size"] and sha256(target) == entry["sha256"]:
            continue
        tmp = dest / f".{name}.joining"
        if entry["parts"]:
            with open(tmp, "wb") as fout:
                for part in entry["parts"]:
                    with open(where[part], "rb") as fin:
                        shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            shutil.copyfile(where[name], tmp)
        got = sha256(tmp)
        if got != entry["sha256"]:
            tmp.unlink()
            raise BundleError(f"{name}: sha256 {got} after joining, the manifest says {entry['sha256']}")
        os.replace(tmp, target)
        written.append(name)
    return written


def main(argv: list[str]) -> int:
    usage = "usage: bundles.py split SRC OUT --max-mib N | join BUNDLES DEST"
    try:
        if len(argv) == 5 and argv[0] == "split" and argv[3] == "--max-mib":
            folders = split(Path(argv[1]), Path(argv[2]), float(argv[4]))
            for f in folders:
                size = sum(p.stat().st_size for p in f.iterdir())
                print(f"{f}  {size / 2**20:.1f} MiB")
            return 0
        if len(argv) == 3 and argv[0] == "join":
            written = join(Path(argv[1]), Path(argv[2]))
            print(f"joined {len(written)} file(s) into {argv[2]} (sha256 checked)")
            return 0
    except (BundleError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
