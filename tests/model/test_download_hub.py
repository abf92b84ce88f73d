"""Real `ichain model download` runs: huggingface_hub's snapshot_download in the hub runtime against a real
HTTP server on 127.0.0.1 that speaks the hub's API (tests/model/hub_server.py), serving the tiny model as
`org/tiny`. Checks the folder is byte-identical and loads, include/exclude, the token (sent, never stored or in
argv), a download SIGKILLed midway (no OUT; the re-run resumes with a Range request), and the hub's errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.conftest import runtime_python

from model.hub_server import Hub, HubServer, Repo

pytestmark = pytest.mark.upstream

TOKEN = "hf_testTOKEN0123456789abcdef"
EXTRAS = {"original/consolidated.00.pth": b"\x80" * 64, "model.gguf": b"GGUF" * 32, "optimizer.pt": b"\0" * 32,
          ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", "README.md": b"# tiny\n"}
BIG = 24 * 1024 * 1024  # > huggingface_hub's 10 MB download chunk, so a partial file holds bytes when killed
STALL = 12 * 1024 * 1024


def _big_safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [BIG], "data_offsets": [0, BIG]}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(BIG)  # random: a misplaced resume would show


@contextmanager
def serving(tiny_model: Path, token: str):
    """The test repos on a local server: org/tiny (the tiny model + files the default choice skips),
    org/private (the same, behind `token`), org/big (a 24 MB weight file, behind `token`)."""
    tiny = Repo.from_folder(tiny_model, EXTRAS)
    big = Repo({"config.json": (tiny_model / "config.json").read_bytes(), "model.safetensors": _big_safetensors()},
               token=token)
    h = Hub({"org/tiny": tiny, "org/private": Repo(dict(tiny.files), token=token), "org/big": big})
    with HubServer(h):
        yield h


@pytest.fixture(scope="module")
def hub(tiny_model):
    with serving(tiny_model, TOKEN) as h:
        yield h


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **extra}  # no stored login, no shared cache


def _ichain(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", "model", "download", *args,
                           "--python", str(runtime_python("hub"))],
                          capture_output=True, text=True, timeout=120, env=env or _env(tmp_path))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "hf-home")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_download_is_byte_identical_loads_and_reruns_as_a_no_op(hub, tiny_model, tmp_path):
    out = tmp_path / "models" / "tiny"
    res = _ichain(tmp_path, "org/tiny", "-o", str(out), "--endpoint", hub.url)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "architecture    LlamaForCausalLM" in res.stdout  # the inspect summary ends the run
    got = _files(out)
    report = json.loads(got.pop("ichain-model.json"))
    # README.md is the model card; other formats, original/ and optimizer state are skipped by default
    assert got == {**_files(tiny_model), "README.md": EXTRAS["README.md"]}
    assert sorted(report["skipped"]) == sorted(set(EXTRAS) - {"README.md"})
    assert report["commit"] == hub.repos["org/tiny"].sha and report["endpoint"] == hub.url
    weights = next(f for f in report["files"] if f["name"] == "model.safetensors")
    assert weights["sha256"] == hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # no scratch, no log left behind
    load = subprocess.run([str(runtime_python("xtuner")), "-c", (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t.apply_chat_template([{'role': 'user', 'content': 'hi'}], return_tensors='pt')\n"
        "print(m(ids).logits.shape[-1], m.num_parameters())"), str(out)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert load.returncode == 0, load.stderr[-3000:]
    assert load.stdout.split() == ["555", "145088"]
    before = len(hub.requests)
    again = _ichain(tmp_path, "org/tiny", "-o", str(out), "--endpoint", hub.url)
    assert again.returncode == 0 and "already holds org/tiny@main" in again.stderr, again.stderr
    assert len(hub.requests) == before  # nothing asked of the hub


def test_include_and_exclude(hub, tiny_model, tmp_path):
    hub.requests.clear()
    out = tmp_path / "sel"
    res = _ichain(tmp_path, "org/tiny", "-o", str(out), "--endpoint", hub.url, "--include", "original/",
                  "--include", "*.gguf", "--exclude", "README.md", "--exclude", "tokenizer.json")
    assert res.returncode == 0, res.stderr[-3000:]
    got = _files(out)
    got.pop("ichain-model.json")
    want = {k: v for k, v in _files(tiny_model).items() if k != "tokenizer.json"}
    assert got == {**want, "original/consolidated.00.pth": EXTRAS["original/consolidated.00.pth"],
                   "model.gguf": EXTRAS["model.gguf"]}
    assert not any("tokenizer.json" in p or "README" in p for _, p, _ in hub.seen(path_part="/resolve/"))


def test_private_repo_needs_the_token_and_never_stores_it(hub, tmp_path):
    hub.requests.clear()
    out = tmp_path / "priv"
    res = _ichain(tmp_path, "org/private", "-o", str(out), "--endpoint", hub.url)
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert "org/private not found" in err and f"{hub.url}/api/models/org/private" in err and "--token-env" in err
    assert "Traceback" not in res.stderr and not out.exists() and _names(tmp_path) == [".priv.log"]
    wrong = _ichain(tmp_path, "org/private", "-o", str(out), "--endpoint", hub.url, "--token-env", "MY_TOKEN",
                    env=_env(tmp_path, MY_TOKEN="hf_wrong"))
    assert wrong.returncode == 1 and "the token in $MY_TOKEN" in wrong.stderr, wrong.stderr
    res = _ichain(tmp_path, "org/private", "-o", str(out), "--endpoint", hub.url, "--token-env", "MY_TOKEN",
                  env=_env(tmp_path, MY_TOKEN=TOKEN))
    assert res.returncode == 0, res.stderr[-3000:]
    authed = [h.get("authorization") for _, p, h in hub.requests if "/org/private/" in p]
    assert authed and authed[-1] == f"Bearer {TOKEN}"
    for path in out.rglob("*"):
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in res.stdout + res.stderr


def _worker_pids(scratch: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"model_download.py" in c for c in cmd) and str(scratch).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def kill_then_resume(hub, tmp_path: Path, ichain, env: dict, token: str, token_var: str, *source: str,
                     min_partial: int = 1) -> None:
    """Kill `ichain model download` (and its worker) mid-file: no output, a partial in the scratch folder,
    the token in no argv; the re-run (`ichain`: the caller's runner, which adds `source` itself) asks only
    for the rest (one Range request) and completes."""
    blob = hashlib.sha256(hub.repos["org/big"].files["model.safetensors"]).hexdigest()
    hub.stall[blob], hub.sent[blob] = STALL, 0
    hub.release.clear()
    out, scratch = tmp_path / "big", tmp_path / ".big.partial"
    env = {**env, token_var: token}
    args = [sys.executable, "-m", "internlm_chain", "model", "download", *source, "org/big", "-o", str(out),
            "--endpoint", hub.url, "--token-env", token_var, "--python", str(runtime_python("hub"))]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, partial = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            partial = [p for p in scratch.rglob("*.incomplete") if p.stat().st_size >= min_partial]
            if partial:
                break
            time.sleep(0.1)
        assert partial, "the download never wrote a partial file"
        workers = _worker_pids(scratch)
        assert workers
        for pid in workers:  # the token travels in the environment, never in argv
            assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.killpg(proc.pid, signal.SIGKILL)  # ichain and its process group; the worker has its own session
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _worker_pids(scratch) and time.monotonic() < deadline:  # the worker dies with its parent
            time.sleep(0.1)
        assert not _worker_pids(scratch)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        hub.release.set()
    assert not out.exists() and scratch.is_dir()
    have = sum(p.stat().st_size for p in scratch.rglob("*.incomplete"))
    assert 0 < have <= STALL
    hub.requests.clear()
    hub.stall.clear()
    hub.sent[blob] = 0
    res = ichain(tmp_path, "org/big", "-o", str(out), "--endpoint", hub.url, "--token-env", token_var, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ranges = [h.get("range") for m, p, h in hub.requests if m == "GET" and p == f"/cdn/{blob}"]
    assert ranges == [f"bytes={have}-"]
    assert hub.sent[blob] == len(hub.repos["org/big"].files["model.safetensors"]) - have  # only the rest
    assert (out / "model.safetensors").read_bytes() == hub.repos["org/big"].files["model.safetensors"]
    assert not scratch.exists() and token.encode() not in b"".join(_files(out).values())


def test_killed_download_leaves_no_output_and_resumes(hub, tmp_path):
    kill_then_resume(hub, tmp_path, _ichain, _env(tmp_path), TOKEN, "MY_TOKEN")


def test_hub_errors_name_the_repo_url_and_what_to_do(hub, tmp_path):
    res = _ichain(tmp_path, "org/tinny", "-o", str(tmp_path / "a"), "--endpoint", hub.url)
    assert res.returncode == 1
    assert f"org/tinny not found at {hub.url} (HTTP 404, {hub.url}/api/models/org/tinny" in res.stderr
    assert "check the spelling" in res.stderr and "Traceback" not in res.stderr
    res = _ichain(tmp_path, "org/tiny", "--revision", "v9", "-o", str(tmp_path / "a"), "--endpoint", hub.url)
    assert res.returncode == 1 and "has no revision 'v9'" in res.stderr, res.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = _ichain(tmp_path, "org/tiny", "-o", str(tmp_path / "a"), "--endpoint", dead)
    assert res.returncode == 1 and f"cannot download org/tiny from {dead}" in res.stderr, res.stderr
    assert "--endpoint https://hf-mirror.com" in res.stderr
    assert _names(tmp_path) == [".a.log"]  # nothing to resume: no scratch left
