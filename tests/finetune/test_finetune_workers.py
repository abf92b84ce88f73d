"""The stdlib parts of the finetune workers: loss curves across resumed runs, the plain PNG writer, the
checkpoint lookup."""

from __future__ import annotations

import json
import struct
import zlib

from internlm_chain.workers import finetune_convert, finetune_verify


def _run(work, stamp: str, rows: list[dict], log: str = "") -> None:
    d = work / stamp / "vis_data"
    d.mkdir(parents=True)
    (d / "scalars.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"loss": 1.0, "st', "utf-8")
    (work / stamp / f"{stamp}.log").write_text(log, encoding="utf-8")


def test_losses_merge_resumed_runs_and_name_the_checkpoint(tmp_path):
    work = tmp_path / "work_dir"
    _run(work, "20260101_000000", [{"loss": 3.0, "step": 1}, {"loss": 2.5, "step": 2}, {"loss": 2.4, "step": 3}],
         "x - INFO - Auto resumed from the latest checkpoint None.\n")
    _run(work, "20260101_010000", [{"loss": 2.45, "step": 3}, {"loss": 2.0, "step": 4}, {"lr": 1e-4, "step": 4}],
         f"x - INFO - Auto resumed from the latest checkpoint {work}/iter_2.pth.\n")
    (work / "iter_2.pth").write_bytes(b"")
    points, resumed = finetune_verify.read_losses(work)
    assert points == [[1, 3.0], [2, 2.5], [3, 2.45], [4, 2.0]]  # the resumed run's values win
    assert resumed == [f"{work}/iter_2.pth"]


def test_plain_png_is_a_valid_rgb_image(tmp_path):
    path = tmp_path / "loss.png"
    finetune_verify._plain_png([[1, 3.0], [2, 2.0], [3, 2.5]], path, w=40, h=30)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    assert (w, h) == (40, 30) and len(raw) == h * (1 + 3 * w)
    assert b"\x1f\x77\xb4" in raw  # the line was drawn


def test_latest_checkpoint_follows_a_moved_work_dir(tmp_path):
    work = tmp_path / "published" / "work_dir"
    work.mkdir(parents=True)
    assert finetune_convert.latest_checkpoint(work) is None
    (work / "iter_6.pth").write_bytes(b"")
    (work / "last_checkpoint").write_text(str(tmp_path / "staging" / "work_dir" / "iter_6.pth"))
    assert finetune_convert.latest_checkpoint(work) == work / "iter_6.pth"
