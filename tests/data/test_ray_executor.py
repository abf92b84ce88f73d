"""`executor: ray`: the `ray` settings are checked before any work (located errors, exit 2), and a real
run on a private local Ray instance (datatrove's RayPipelineExecutor, one task per shard) publishes
exactly the files the local executor does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError
from internlm_chain.stages.registry import get_stage

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "src" / "internlm_chain" / "workers"
ICHAIN = [sys.executable, "-m", "internlm_chain"]


def _chain(write_chain, tmp_path, stage_yaml: str, name: str = "chain.yaml", inputs: str = "[corpus]") -> Path:
    (tmp_path / "corpus").mkdir(exist_ok=True)
    if not any((tmp_path / "corpus").iterdir()):
        (tmp_path / "corpus" / "a.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    return write_chain(f"name: t\nworkdir: {tmp_path}/run-{name[:-5]}\ndevice: cpu\nstages:\n  data:\n"
                       f"    inputs: {inputs}\n{stage_yaml}", name)


def _context(path: Path, **kw):
    from internlm_chain.chain.planner import Planner

    return Planner(load_chain(path)).context("data", **kw)


def _problems(path: Path) -> dict[str, str]:
    return {p.path: p.render() for p in get_stage("data").validate(_context(path))}


def test_ray_settings_without_ray_executor(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    executor: local\n    ray:\n      address: auto\n")
    probs = _problems(path)
    assert list(probs) == ["stages.data.ray"]
    assert "chain.yaml:8" in probs["stages.data.ray"] and "only with executor: ray" in probs["stages.data.ray"]


@pytest.mark.parametrize("address, ok", [
    ("local", True), ("auto", True), ("10.0.0.5:6379", True), ("head-node.cluster:6379", True), ("[::1]:6379", True),
    ("ray://10.0.0.5:10001", False), ("http://10.0.0.5:6379", False), ("10.0.0.5", False), ("10.0.0.5:70000", False),
    ("", False), ("host name:1", False),
])
def test_address_forms(write_chain, tmp_path, address, ok):
    path = _chain(write_chain, tmp_path, f"    executor: ray\n    ray:\n      address: '{address}'\n")
    probs = _problems(path)
    if ok:
        assert probs == {}
    else:
        assert list(probs) == ["stages.data.ray.address"] and "chain.yaml:9" in probs["stages.data.ray.address"]
        assert ("Ray Client" if address.startswith("ray://") else "is not local, auto or host:port") in \
            probs["stages.data.ray.address"]


def test_local_instance_bounds(write_chain, tmp_path):
    cores = os.cpu_count()
    path = _chain(write_chain, tmp_path, f"    executor: ray\n    ray:\n      local_cpus: {cores + 1}\n")
    assert f"this machine has {cores}" in _problems(path)["stages.data.ray.local_cpus"]
    path = _chain(write_chain, tmp_path, "    executor: ray\n    workers: 1\n    ray:\n      cpus_per_task: 2\n")
    assert "no task could ever start" in _problems(path)["stages.data.ray.cpus_per_task"]
    path = _chain(write_chain, tmp_path, "    executor: ray\n    ray:\n      memory_per_task_gb: 100000\n")
    assert "GiB but this machine has" in _problems(path)["stages.data.ray.memory_per_task_gb"]
    path = _chain(write_chain, tmp_path, "    executor: ray\n    ray:\n      address: auto\n      local_cpus: 2\n")
    assert "only to address: local" in _problems(path)["stages.data.ray.local_cpus"]
    path = _chain(write_chain, tmp_path, "    executor: ray\n    ray:\n      cpus_per_task: 0\n")
    with pytest.raises(ChainError, match="cpus_per_task"):
        _context(path)
    path = _chain(write_chain, tmp_path, "    executor: ray\n    ray:\n      adress: auto\n")
    with pytest.raises(ChainError, match="adress"):
        _context(path)


def test_bad_ray_settings_exit_2_before_any_work(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    executor: ray\n    ray:\n      address: 'ray://head:10001'\n")
    res = subprocess.run([*ICHAIN, "data", "run", "-c", str(path)], capture_output=True, text=True)
    assert res.returncode == 2 and "stages.data.ray.address" in res.stderr and "Traceback" not in res.stderr
    assert not any((tmp_path / "run-chain").rglob("*"))  # no staging dir, no manifest


def test_planned_pipeline_config(write_chain, tmp_path):
    path = _chain(write_chain, tmp_path, "    executor: ray\n    workers: 2\n    ray:\n      address: auto\n"
                                         "      cpus_per_task: 2\n      memory_per_task_gb: 3\n")
    job = get_stage("data").plan(_context(path))[-1]
    cfg = json.loads(next(iter(job.files.values())))
    assert cfg["executor"] == "ray" and cfg["ray"] == {"address": "auto", "local_cpus": 0, "cpus_per_task": 2,
                                                       "memory_per_task_gb": 3.0, "workers": 2}
    # the flags form takes the defaults: a private local instance
    res = subprocess.run([*ICHAIN, "data", "run", str(tmp_path / "corpus"), "-o", str(tmp_path / "out"), "--executor",
                          "ray", "--dry-run", "--show-files"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert '"address": "local"' in res.stdout


def _tree(root: Path) -> dict[str, bytes]:
    keep = ("clean/", "rejects/", "xtuner/", "internevo/", "tokenizer/", "review.jsonl")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)).startswith(keep)}


@pytest.mark.upstream
def test_ray_run_equals_local_run(write_chain, tmp_path):
    python = runtime_python("data")
    cache = tmp_path / "cache"  # the CLI resolves the runtime through ICHAIN_CACHE: point it at the tested one
    (cache / "envs").mkdir(parents=True)
    (cache / "envs" / "data").symlink_to(Path(python).parent.parent)
    env = {**os.environ, "ICHAIN_CACHE": str(cache)}
    res = subprocess.run([*ICHAIN, "data", "demo", str(tmp_path / "corpus"), "--docs", "200"], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    common = "    workers: 2\n    tokenizer: train\n    tokenizer_vocab_size: 1000\n"
    # 4 of the demo's 7 shards (its planted duplicates, chats and malformed lines): each Ray task costs ~1 s
    # of actor start-up here, so fewer shards keep the test short
    inputs = "[corpus/web_part1.jsonl, corpus/web_part2.jsonl.gz, corpus/chat.jsonl, corpus/broken.jsonl]"
    local = _chain(write_chain, tmp_path, common + "    executor: local\n", "local.yaml", inputs)
    ray = _chain(write_chain, tmp_path, common + "    executor: ray\n    ray: {address: local, local_cpus: 2}\n",
                 "ray.yaml", inputs)
    for path in (local, ray):
        res = subprocess.run([*ICHAIN, "data", "run", "-c", str(path)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ray_out, local_out = tmp_path / "run-ray" / "data", tmp_path / "run-local" / "data"
    log = "".join(p.read_text() for p in (tmp_path / "run-ray" / "data" / "logs").glob("*.log"))
    assert re.search(r"ray: started a local instance, GCS at 127\.0\.0\.1:\d+ \(2 CPUs", log), log[-3000:]
    # every pass and decision ran as datatrove Ray tasks, one per shard, all completed
    runs = sorted((ray_out / "_work" / "datatrove").iterdir())
    assert [r.name for r in runs] == ["00-map-0", "01-decide-0", "02-map-1", "03-map-tokenize"]
    shards = len(json.loads((ray_out / "_work" / "shards.json").read_text()))
    assert shards == 4
    for r in runs:
        want = 1 if "decide" in r.name else shards
        assert len(list((r / "completions").iterdir())) == want and len(list((r / "logs").iterdir())) == want
    assert not (ray_out / "_work" / "ray-tmp").exists()
    # same documents kept, same rejects and duplicate decisions, same exports, byte for byte
    got, want = _tree(ray_out), _tree(local_out)
    assert any(k.startswith("internevo/") for k in want) and any(k.startswith("rejects/") for k in want)
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)
    rep_ray, rep_local = (json.loads((d / "report.json").read_text()) for d in (ray_out, local_out))
    for key in ("docs_in", "docs_kept", "malformed", "review", "dropped_per_step"):
        assert rep_ray[key] == rep_local[key], key
    assert rep_ray["dropped_per_step"].get("dedup_near") and rep_ray["dropped_per_step"].get("dedup_exact")


@pytest.mark.upstream
def test_failing_ray_task_fails_the_run(tmp_path):
    """datatrove's Ray executor only logs a task's exception: the run must still fail, naming the logs."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "hello world, this is a document"}\n')
    bad_model = tmp_path / "model.bin"
    bad_model.write_bytes(b"not a fastText model")  # only the task loads it
    out = tmp_path / "out"
    out.mkdir()
    cfg = {"out_dir": str(out), "inputs": [str(corpus)], "workers": 1, "executor": "ray", "outputs": ["clean"],
           "steps": [{"name": "classifier", "params": {"model": str(bad_model)}}],
           "ray": {"address": "local", "local_cpus": 1, "cpus_per_task": 1, "memory_per_task_gb": 1, "workers": 1}}
    (out / "pipeline.json").write_text(json.dumps(cfg))
    res = subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(WORKERS)}, timeout=300)
    assert res.returncode != 0
    assert "ray: tasks [0] of 00-map-0 did not complete; logs: " in res.stderr, res.stderr[-3000:]
    task_log = (out / "_work" / "datatrove" / "00-map-0" / "logs" / "task_00000.log").read_text()
    assert "model.bin has wrong file format" in task_log, task_log[-2000:]
    assert not (out / "report.json").exists() and not (out / "_work" / "ray-tmp").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A running Ray 'cluster' (`ray start --head`) on loopback, whose workers cannot import datapipe
    by themselves (no PYTHONPATH): the executor must ship it. Stopped by its own pid (never `ray stop`,
    which would stop every Ray on the machine)."""
    import socket
    import time

    port = _free_port()
    ray_bin = Path(runtime_python("data")).parent / "ray"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # bind 127.0.0.1 only
    log = (tmp_path / "ray-head.log").open("w")
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()[-3000:]
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started on SIGTERM
        proc.wait(timeout=60)
        log.close()
        # `ray start` recorded the head for `auto`; `ray stop` would remove the record, SIGTERM does not
        record = Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
        if record.exists() and record.read_text().strip() == f"127.0.0.1:{port}":
            record.unlink()


def _datapipe(out: Path, inputs: list[str], executor: str, **extra):
    out.mkdir(parents=True)
    cfg = {"out_dir": str(out), "inputs": inputs, "workers": 2, "executor": executor, "outputs": ["clean"], **extra}
    (out / "pipeline.json").write_text(json.dumps(cfg))
    return subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(WORKERS)}, timeout=300)


@pytest.mark.upstream
def test_ray_run_on_a_running_cluster(ray_head, tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([str(runtime_python("data")), "-m", "datapipe", "demo", str(corpus), "--docs", "100"],
                   env={**os.environ, "PYTHONPATH": str(WORKERS)}, check=True, capture_output=True)
    inputs = [str(corpus / "web_part1.jsonl"), str(corpus / "web_part2.jsonl.gz")]
    out = tmp_path / "ray"
    # keep the pass files, so a finished run can play an interrupted one below
    res = _datapipe(out, inputs, "ray", ray={"address": ray_head, "workers": 2}, keep_work=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"ray: connected to {ray_head} (2 CPUs)" in res.stdout and "Creating a file package" in res.stderr
    res = _datapipe(tmp_path / "local", inputs, "local")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got, want = _tree(out), _tree(tmp_path / "local")
    assert len(want) >= 5 and got == want  # clean/, rejects/ of both shards, review.jsonl, byte for byte

    def rerun():
        r = subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(WORKERS)}, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    # every task has its completion file: the re-run does not even connect to Ray
    assert "ray: connected" not in rerun().stdout
    # the final pass lost one shard's completion file, marker and output: only that task runs again
    runs = sorted((out / "_work" / "datatrove").iterdir())
    victim = sorted((runs[-1] / "completions").iterdir())[0]
    sid = json.loads((out / "_work" / "shards.json").read_text())[int(victim.name)]["id"]
    victim.unlink()
    (out / "_work" / "markers" / "p1" / f"{sid}.done").unlink()
    (out / "clean" / f"{sid}.jsonl").unlink()
    res = rerun()
    assert "ray: connected" in res.stdout and "Will run pipeline on 1 incomplete ranks out of 2 total" in res.stderr
    assert _tree(out) == want


@pytest.mark.upstream
def test_unreachable_cluster_fails_fast(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    res = _datapipe(tmp_path / "out", [str(tmp_path / "a.jsonl")], "ray", ray={"address": address})
    assert res.returncode != 0 and f"ray: cannot reach the Ray cluster at {address}" in res.stderr, res.stderr[-2000:]


@pytest.mark.upstream
def test_auto_with_a_stale_cluster_record_fails_fast(tmp_path):
    """`auto` follows the address the last `ray start` recorded; a dead head must not hang the run."""
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    record = tmp_path / "raytmp" / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    address = f"127.0.0.1:{_free_port()}"
    record.write_text(address)
    out = tmp_path / "out"
    out.mkdir()
    cfg = {"out_dir": str(out), "inputs": [str(tmp_path / "a.jsonl")], "executor": "ray", "outputs": ["clean"],
           "ray": {"address": "auto"}}
    (out / "pipeline.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([str(runtime_python("data")), "-m", "datapipe", "run", "--config", str(out / "pipeline.json")],
                         capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(WORKERS), "RAY_TMPDIR": str(tmp_path / "raytmp")})
    assert res.returncode != 0 and f"cannot reach the Ray cluster at {address} (from {record}" in res.stderr, \
        res.stderr[-2000:]
