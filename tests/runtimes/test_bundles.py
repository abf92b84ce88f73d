"""Splitting a wheel folder into bundles of at most N MiB and joining them back, byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from internlm_chain.runtimes import bundles
from internlm_chain.runtimes.bundles import MANIFEST, BundleError


def _folder(tmp_path):
    src = tmp_path / "wheels"
    src.mkdir()
    sizes = {"big-1.0-py3-none-any.whl": 3 * 2**20 + 12345, "mid-1.0-py3-none-any.whl": 700_000,
             "small-1.0-py3-none-any.whl": 1000, "tiny-1.0-py3-none-any.whl": 10, "wheels.json": 200}
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    return src


def test_split_and_join_roundtrip_is_byte_identical(tmp_path):
    src = _folder(tmp_path)
    out = tmp_path / "bundles"
    folders = bundles.split(src, out, max_mib=1.5)
    limit = int(1.5 * 2**20)
    for f in folders:
        assert sum(p.stat().st_size for p in f.iterdir()) <= limit, f  # the manifest included
    parts = sorted(p.name for f in folders for p in f.iterdir() if ".part" in p.name)
    assert parts == [f"big-1.0-py3-none-any.whl.part{i:02d}-of-04" for i in range(1, 5)]
    assert len(folders) == 4  # the big file's four parts; the small files fill the gaps
    dest = tmp_path / "joined"
    # every bundle can come from another call: join what is there, name what is not
    shutil.rmtree(folders[-1])
    with pytest.raises(BundleError, match=r"bundle\(s\) 04 of 4 are missing"):
        bundles.join(out, dest)
    bundles.split(src, out, max_mib=1.5)
    written = bundles.join(out, dest)
    assert sorted(written) == sorted(p.name for p in src.iterdir())
    for p in src.iterdir():
        assert (dest / p.name).read_bytes() == p.read_bytes(), p.name
    assert bundles.join(out, dest) == []  # a second join finds everything in place
    (dest / "mid-1.0-py3-none-any.whl").write_bytes(b"truncated")
    assert bundles.join(out, dest) == ["mid-1.0-py3-none-any.whl"]  # a damaged file is rebuilt


def test_join_runs_with_a_bare_python_and_checks_hashes(tmp_path):
    src = _folder(tmp_path)
    out = tmp_path / "bundles"
    bundles.split(src, out, max_mib=2)
    part = next(out.glob("*/big-*.part02-of-*"))
    data = bytearray(part.read_bytes())
    data[0] ^= 0xFF
    part.write_bytes(bytes(data))
    script = bundles.__file__
    res = subprocess.run([sys.executable, "-I", script, "join", str(out), str(tmp_path / "j")], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "big-1.0-py3-none-any.whl: sha256" in res.stderr, res.stderr
    data[0] ^= 0xFF
    part.write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-I", script, "join", str(out), str(tmp_path / "j")], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "joined 5 file(s)" in res.stdout, res.stderr
    assert (tmp_path / "j" / "big-1.0-py3-none-any.whl").read_bytes() == (src / "big-1.0-py3-none-any.whl").read_bytes()
    assert (out / MANIFEST).is_file()


def test_split_refuses_a_foreign_folder_and_a_tiny_limit(tmp_path):
    src = _folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle folder"):
        bundles.split(src, other, max_mib=2)
    assert (other / "keep.txt").exists()
    with pytest.raises(BundleError, match="too small"):
        bundles.split(src, tmp_path / "b", max_mib=1)
