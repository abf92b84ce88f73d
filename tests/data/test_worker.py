"""Step-level checks and full pipeline runs in the real data runtime (marked upstream)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "src" / "internlm_chain" / "workers"
pytestmark = pytest.mark.upstream

CHECKS = ["zh_rules_keep_normal_chinese", "mixed_zh_en_is_zh", "pii_masking", "blocklist_and_review",
          "near_dedup_zh_en", "bin_format_roundtrip", "extract_html"]


def _env():
    return {**os.environ, "PYTHONPATH": str(WORKERS), "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def _check(name: str, tmp_path: Path) -> None:
    res = subprocess.run([str(runtime_python("data")), str(Path(__file__).parent / "worker_checks.py"), name,
                          str(tmp_path)], capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("name", CHECKS)
def test_step(name, tmp_path):
    _check(name, tmp_path)


def _uv_env() -> dict:
    """uv does not read pip's configuration: hand it the local wheel folders pip is configured with."""
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    conf = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    links = conf.get("global.find-links", "").strip("'\"")
    extra = conf.get("global.extra-index-url", "").strip("'\"")
    if links and "UV_FIND_LINKS" not in env:
        env["UV_FIND_LINKS"] = links
    if extra and "UV_EXTRA_INDEX_URL" not in env:
        env["UV_EXTRA_INDEX_URL"] = extra
        env.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")
    return env


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory) -> Path:
    """A tiny fastText model trained in a throwaway venv (fasttext-wheel + numpy<2): the runtime's
    fasttext-numpy2 cannot train here ("Encountered NaN"), but it loads and predicts this .bin."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is needed to build the throwaway fastText training venv")
    tmp = tmp_path_factory.mktemp("fasttext")
    venv = tmp / "venv"
    env = _uv_env()
    for argv in ([uv, "venv", "-q", "-p", str(runtime_python("data")), str(venv)],
                 [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "fasttext-wheel",
                  "numpy<2"]):
        res = subprocess.run(argv, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
    model = tmp / "q.bin"
    res = subprocess.run([str(venv / "bin" / "python"), str(Path(__file__).parent / "train_fasttext.py"), str(model)],
                         capture_output=True, text=True, env=_env())
    assert res.returncode == 0 and model.exists(), res.stderr
    return model


def test_fasttext_classifier_hook(quality_model, tmp_path):
    shutil.copy(quality_model, tmp_path / "q.bin")
    _check("fasttext_classifier_hook", tmp_path)


def test_classifier_step_in_a_pipeline_run(quality_model, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [{"id": f"g{i}", "text": f"The team {w} published a detailed report on the river, and the results "
             "were encouraging. Most of the data has been made public for the region."}
            for i, w in enumerate(["quickly", "finally", "again", "recently"])]
    spam = [{"id": "s0", "text": "buy cheap click now free !!! buy cheap click now free now click buy"}]
    (corpus / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in good + spam))
    steps = [{"name": "classifier", "params": {"model": str(quality_model), "label": "hq", "threshold": 0.5}}]
    res = _run_worker(tmp_path / "out", corpus, steps=steps, outputs=["clean"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    clean = [json.loads(line) for f in (tmp_path / "out" / "clean").glob("*.jsonl") for line in f.open()]
    assert sorted(c["id"] for c in clean) == ["g0", "g1", "g2", "g3"]
    assert all(c["meta"]["scores"]["quality"] > 0.5 for c in clean)
    rejects = [json.loads(line) for f in (tmp_path / "out" / "rejects").glob("*.p*.jsonl") for line in f.open()]
    assert [(r["id"], r["step"]) for r in rejects] == [("s0", "classifier")]


def _run_worker(out: Path, corpus: Path, **extra):
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps({"out_dir": str(out), "inputs": [str(corpus)], "workers": 2,
                                                   "tokenizer": "train", "tokenizer_vocab_size": 1000, **extra}))
    return subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                          capture_output=True, text=True, env=_env())


def test_ichain_data_run_on_demo_corpus(tmp_path):
    python = runtime_python("data")
    cache = tmp_path / "cache"
    (cache / "envs").mkdir(parents=True)
    (cache / "envs" / "data").symlink_to(Path(python).parent.parent)
    env = {**os.environ, "ICHAIN_CACHE": str(cache)}
    ichain = [sys.executable, "-m", "internlm_chain"]
    assert subprocess.run([*ichain, "data", "demo", str(tmp_path / "corpus")], env=env).returncode == 0
    res = subprocess.run([*ichain, "data", "run", str(tmp_path / "corpus"), "-o", str(tmp_path / "out"),
                          "--tokenizer", "train", "--workers", "2", "--json"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"  # OUT/clean, OUT/report.json, … as the flags form promises
    assert (out / "clean").is_symlink() and (out / ".ichain" / "data" / "clean").is_dir()
    rep = json.loads((out / "report.json").read_text())
    truth = json.loads((tmp_path / "corpus" / ".truth.json").read_text())
    assert rep["malformed"] == truth["malformed"]  # 3 bad lines + the empty file
    rejects = [json.loads(line) for f in (out / "rejects").glob("*.p*.jsonl") for line in f.open()]
    by_id = {r["id"]: r for r in rejects}
    for junk in truth["junk"]:
        assert junk in by_id, junk
    family = {**truth["exact"], **truth["near"]}  # copy id -> original id
    for kind in ("exact", "near"):  # one of each planted pair is dropped as a duplicate of its family
        for a, b in truth[kind].items():
            hit = [x for x in (a, b) if x in by_id and by_id[x]["step"].startswith("dedup")]
            assert hit and family.get(by_id[hit[0]]["dup_of"], by_id[hit[0]]["dup_of"]) == b, (a, b)
    clean = [json.loads(line) for f in (out / "clean").glob("*.jsonl") for line in f.open()]
    text = "\n".join(c["text"] for c in clean)
    assert "13812345678" not in text and "zhang.san@example.com" not in text and "[PHONE]" in text
    assert "版权所有 © 2024" not in text  # boilerplate footer removed by line de-duplication
    assert {c["meta"]["lang"] for c in clean} == {"zh", "en"}
    sft = [json.loads(line) for line in (out / "xtuner" / "sft.jsonl").open()]
    assert len(sft) == 6 and sft[0]["messages"][0]["role"] == "system"
    tok_cfg = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "<|im_start|>" in tok_cfg["chat_template"]
    bins = sorted((out / "internevo").glob("*/*.bin"))
    assert {b.parent.name for b in bins} == {"zh", "en"} and all(Path(str(b) + ".meta").exists() for b in bins)
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3
    manifest = json.loads((tmp_path / "out" / ".ichain" / "manifest.json").read_text())
    assert manifest["stages"]["data"]["metrics"]["docs_kept"] == rep["docs_kept"] == len(clean)
    res = subprocess.run([*ichain, "data", "report", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "near duplicate" in res.stdout


def test_resume_per_shard(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([str(runtime_python("data")), "-m", "datapipe", "demo", str(corpus), "--docs", "60"],
                   env=_env(), check=True, capture_output=True)
    out = tmp_path / "out"
    assert _run_worker(out, corpus, keep_work=True).returncode == 0
    first = {f.name: f.read_bytes() for f in (out / "clean").glob("*.jsonl")}
    markers = sorted((out / "_work" / "markers" / "p1").glob("*.done"))
    # simulate an interruption: one shard's final pass never completed
    victim = markers[-1]
    victim.unlink()
    (out / "clean" / (victim.name[:-5] + ".jsonl")).unlink()
    stamps = {m.name: m.stat().st_mtime_ns for m in markers if m != victim}
    res = _run_worker(out, corpus, keep_work=True)
    assert res.returncode == 0, res.stderr
    assert {m.name: m.stat().st_mtime_ns for m in markers if m != victim} == stamps  # others skipped
    assert {f.name: f.read_bytes() for f in (out / "clean").glob("*.jsonl")} == first


def test_datatrove_local_executor(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([str(runtime_python("data")), "-m", "datapipe", "demo", str(corpus), "--docs", "40"],
                   env=_env(), check=True, capture_output=True)
    res = _run_worker(tmp_path / "out", corpus, executor="datatrove-local", outputs=["clean"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert list((tmp_path / "out" / "_work" / "datatrove").glob("*/completions/00000"))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["docs_kept"] > 30
