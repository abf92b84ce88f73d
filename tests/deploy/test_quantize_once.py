"""Quantise once: the worker publishes a quantised model complete or not at all, and the deploy stage's
plan holds the quantise job only while no verified result for the same inputs exists.

`lmdeploy lite` needs a GPU, so the worker here runs a small Python stand-in for it (it writes
config.json and weights into the folder it is given, optionally slowly) — everything else is the real
worker, the real stage and the real CLI dry-run; the LMDeploy command itself is pinned by the goldens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.deploy.chains import chain_text

from internlm_chain.chain.planner import Planner
from internlm_chain.config.loader import load_chain
from internlm_chain.stages.registry import get_stage
from internlm_chain.workers import deploy_quantize
from internlm_chain.workers.deploy_quantize import MARKER, is_complete

# stands in for `lmdeploy lite`: writes a model into argv[1]; argv[2] seconds between the two files
FAKE_LITE = ("import pathlib,sys,time; w=pathlib.Path(sys.argv[1]); (w/'config.json').write_text('{}'); "
             "time.sleep(float(sys.argv[2])); (w/'model.safetensors').write_bytes(b'0'*4096); "
             "print('lite done', flush=True)")


def worker(out: Path, key: str, *command: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, deploy_quantize.__file__, "--out", str(out), "--key", key, "--",
                             *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def run(out: Path, key: str, *command: str) -> tuple[int, str]:
    proc = worker(out, key, *command)
    text, _ = proc.communicate(timeout=60)
    return proc.returncode, text


def test_publishes_complete_and_reuses_without_running_again(tmp_path):
    out = tmp_path / "q" / "awq-k1"
    code, text = run(out, "k1", "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 0, text
    assert "lite done" in text and is_complete(str(out), "k1")
    marker = json.loads((out / MARKER).read_text())
    assert marker["files"] == {"config.json": 2, "model.safetensors": 4096}
    assert marker["content"].startswith("sha256:") and not list(out.parent.glob(".*partial"))
    # same key: the command is not run at all (it would fail)
    code, text = run(out, "k1", "-c", "raise SystemExit(3)")
    assert code == 0 and "reusing the verified quantised model" in text, text
    # other inputs (another key): quantised again, the stale result replaced
    code, text = run(out, "k2", "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 0 and "lite done" in text and is_complete(str(out), "k2") and not is_complete(str(out), "k1")


def test_killed_midway_leaves_nothing_reusable_and_is_redone(tmp_path):
    out = tmp_path / "q" / "awq-k1"
    proc = worker(out, "k1", "-c", FAKE_LITE, "@WORK@", "30", start_new_session=True)
    partial = out.parent / f".{out.name}.partial"
    deadline = time.monotonic() + 30
    while not (partial / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (partial / "config.json").exists(), "the stand-in never started writing"
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: worker and quantiser die together, no handler runs
    proc.wait()
    assert not out.exists() and not is_complete(str(out), "k1")
    code, text = run(out, "k1", "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 0 and "removing an unfinished earlier attempt" in text and "lite done" in text, text
    assert is_complete(str(out), "k1") and not partial.exists()


def test_failures_keep_nothing_and_foreign_folders_are_never_touched(tmp_path):
    out = tmp_path / "q" / "awq-k1"
    code, text = run(out, "k1", "-c", "raise SystemExit(5)")
    assert code == 5 and "exited with code 5; nothing was kept" in text and not out.exists()
    # exit 0 without weights is a failure too (what a crash of lmdeploy's own writer could leave)
    code, text = run(out, "k1", "-c", "import pathlib,sys; (pathlib.Path(sys.argv[1])/'config.json').write_text('{}')",
                     "@WORK@")
    assert code == 1 and "left no model" in text and not out.exists()
    mine = tmp_path / "my-models"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    code, text = run(mine, "k1", "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 2 and "refusing to replace it" in text and (mine / "keep.txt").read_text() == "mine"


def test_a_changed_or_missing_file_is_not_complete(tmp_path):
    out = tmp_path / "awq-k1"
    assert run(out, "k1", "-c", FAKE_LITE, "@WORK@", "0")[0] == 0
    (out / "model.safetensors").write_bytes(b"0" * 10)  # truncated
    assert not is_complete(str(out), "k1")
    (out / "model.safetensors").unlink()
    assert not is_complete(str(out), "k1")


# ---- the stage: plan and dry-run ------------------------------------------------------------------
def quant_chain(write_chain, fake_model: Path, tmp_path: Path, extra: str = "", method: str = "awq",
                name: str = "chain.yaml") -> Path:
    calib = tmp_path / "hf" / "hub" / "datasets--mit-han-lab--pile-val-backup"
    calib.mkdir(parents=True, exist_ok=True)
    deploy = f"quantize: {{enabled: true, method: {method}, calib_data: {tmp_path / 'hf'}{extra}}}"
    return write_chain(chain_text(fake_model, tmp_path / "run", device="cuda", deploy=deploy), name)


def planned(chain: Path) -> tuple[object, object, list[str]]:
    loaded = load_chain(chain)
    ctx = Planner(loaded).context("deploy")
    stage = get_stage("deploy")
    assert stage.validate(ctx) == []
    return stage, ctx, [j.name for j in stage.plan(ctx)]


def dry_run_jobs(chain: Path) -> list[str]:
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "deploy", "serve", "-c", str(chain), "--dry-run",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [outcome] = json.loads(res.stdout)
    return [j["name"] for j in outcome["jobs"]]


def test_restart_plan_has_no_quantize_job_once_a_verified_model_exists(write_chain, fake_model, tmp_path):
    chain = quant_chain(write_chain, fake_model, tmp_path)
    stage, ctx, jobs = planned(chain)
    assert jobs == ["quantize", "serve"] and dry_run_jobs(chain) == ["quantize", "serve"]
    out = stage.quantized_dir(ctx)
    assert out.parent == tmp_path / "run" / ".cache" / "quantized"  # outside the stage folder each run replaces

    # a quantisation killed midway: its scratch folder exists, the plan still quantises
    partial = out.parent / f".{out.name}.partial"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    assert planned(chain)[2] == ["quantize", "serve"]

    # the quantise job's own command, run for real with the stand-in for `lmdeploy lite`
    [qjob] = [j for j in stage.plan(ctx) if j.name == "quantize"]
    argv = qjob.argv[qjob.argv.index("--") + 1:]
    assert argv[:4] == ["-m", "lmdeploy", "lite", "auto_awq"] and "@WORK@" in argv
    key = qjob.argv[qjob.argv.index("--key") + 1]
    code, text = run(Path(qjob.argv[qjob.argv.index("--out") + 1]), key, "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 0, text

    # the restart: the same chain plans only the server, on the verified model
    stage, ctx, jobs = planned(chain)
    assert jobs == ["serve"] and dry_run_jobs(chain) == ["serve"]
    [serve] = stage.plan(ctx)
    assert "reusing the verified quantised model" in serve.description
    assert str(out) in json.loads(next(iter(serve.files.values())))["services"][0]["argv"]

    # quantisation inputs changed (calibration samples): a new key, quantised again; serving-only
    # changes (port) keep the key
    other = quant_chain(write_chain, fake_model, tmp_path, ", calib_samples: 64", name="other.yaml")
    assert planned(other)[2] == ["quantize", "serve"]
    ported = write_chain(chain.read_text().replace("deploy:\n", "deploy:\n    port: 24444\n"), "ported.yaml")
    stage2, ctx2, jobs2 = planned(ported)
    assert jobs2 == ["serve"] and stage2.quantize_key(ctx2) == key


def test_new_model_weights_mean_a_new_quantisation(write_chain, fake_model, tmp_path):
    chain = quant_chain(write_chain, fake_model, tmp_path)
    stage, ctx, _ = planned(chain)
    key = stage.quantize_key(ctx)
    (fake_model / "model.safetensors").write_bytes(b"new weights")
    assert planned(chain)[0].quantize_key(planned(chain)[1]) != key


@pytest.mark.parametrize("method", ["awq", "smooth_quant"])
def test_collect_refuses_an_incomplete_quantisation(write_chain, fake_model, tmp_path, method):
    from internlm_chain.errors import StageFailed

    chain = quant_chain(write_chain, fake_model, tmp_path, method=method)
    stage, ctx, _ = planned(chain)
    out = stage.quantized_dir(ctx)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")  # looks like a model, but no marker: never published by the worker
    with pytest.raises(StageFailed, match="no complete quantised model"):
        stage.collect(ctx, [])


def quantize_cli_dry_run(chain: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", "deploy", "quantize", "-c", str(chain),
                           "--dry-run"], capture_output=True, text=True, timeout=120)


def test_quantize_verb_writes_where_serve_reuses_it(write_chain, fake_model, tmp_path):
    chain = quant_chain(write_chain, fake_model, tmp_path)
    stage, ctx, _ = planned(chain)
    out = stage.quantized_dir(ctx)
    res = quantize_cli_dry_run(chain)
    assert res.returncode == 0, res.stderr
    assert f"--out {out}" in res.stdout and "lite auto_awq" in res.stdout
    code, text = run(out, stage.quantize_key(ctx), "-c", FAKE_LITE, "@WORK@", "0")
    assert code == 0, text
    res = quantize_cli_dry_run(chain)
    assert res.returncode == 0 and "already quantised with the same model and settings" in res.stderr, res.stderr
    assert "lite auto_awq" not in res.stdout
    assert planned(chain)[2] == ["serve"]
