"""`ichain report`: a self-contained page that renders in a real browser with every image loaded."""

from __future__ import annotations

import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest

from helpers import run_cli
from internlm_chain.chain.artifacts import EvalReport, HFModel
from internlm_chain.chain.manifest import Manifest, StageRecord


def tiny_png(width: int = 8, height: int = 4) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def finished_run(write_chain, tmp_path):
    chain = write_chain(f"name: demo\nworkdir: {tmp_path / 'w'}\nstages:\n  data: {{demo_corpus: 10}}\n")
    work = tmp_path / "w"
    (work / "finetune").mkdir(parents=True)
    (work / "finetune" / "loss.png").write_bytes(tiny_png())
    (work / "eval").mkdir()
    (work / "eval" / "report.html").write_text(
        f"<img alt='scores' src='data:image/png;base64,{__import__('base64').b64encode(tiny_png()).decode()}'>")
    (work / "agent").mkdir()
    (work / "agent" / "transcript.json").write_text('{"steps": [{"thought": "use <calc>"}]}')
    now = time.time()
    m = Manifest(chain="demo", chain_file=str(chain), version="test", stages={
        "finetune": StageRecord(state="done", fingerprint="f" * 64, started=now - 5, ended=now, duration_s=5.0,
                                metrics={"final_loss": 1.25, "loss_curve": [3.0, 2.0, 1.25]},
                                outputs={"model": HFModel(path=str(work / "finetune"), fingerprint="sha256:" + "ab" * 32,
                                                          chat_template="internlm2_chat")},
                                commands=["cd /x && python -m xtuner.tools.train cfg.py"]),
        "eval": StageRecord(state="failed", error="job run exited with code 1",
                            outputs={"report": EvalReport(path=str(work / "eval" / "report.html"))}),
        "agent": StageRecord(state="done", duration_s=1.0),
    })
    m.save(work)
    return chain, work


def test_report_is_self_contained(capsys, finished_run, tmp_path):
    chain, _ = finished_run
    out = tmp_path / "report.html"
    r = run_cli(capsys, "report", chain, "-o", out)
    assert r.code == 0, r.err
    page = out.read_text()
    assert page.count("<img") == 2 and "src=\"http" not in page and "<script" not in page
    assert "final_loss" in page and "job run exited with code 1" in page
    # each artifact's content hash: short in the table, whole in the cell's title
    assert f"<code title='sha256:{'ab' * 32}'>sha256:{'ab' * 8}…</code>" in page
    assert "use &lt;calc&gt;" in page  # transcripts are escaped, not injected


def test_report_without_a_run_is_a_clear_error(capsys, write_chain, tmp_path):
    chain = write_chain(f"name: demo\nworkdir: {tmp_path / 'none'}\n")
    r = run_cli(capsys, "report", chain, "-o", tmp_path / "r.html")
    assert r.code == 2 and "no run recorded" in r.err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it)")
def test_report_renders_in_headless_chromium(capsys, finished_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chain, _ = finished_run
    out = tmp_path / "report.html"
    assert run_cli(capsys, "report", chain, "-o", out).code == 0
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(Path(out).as_uri())
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.id)")
        browser.close()
    assert errors == []
    assert loaded == [True, True]
    assert headings == ["finetune", "eval", "agent"]
