"""Real `ichain model download --source modelscope` runs: modelscope.hub.snapshot_download in the hub runtime
against a real HTTP server on 127.0.0.1 that speaks the ModelScope endpoints the client calls
(tests/model/hub_server.py), serving the tiny model as `org/tiny`. Checks the folder is byte-identical, the
token (sent, never stored or in argv), a download SIGKILLed midway (no OUT; the re-run resumes with a Range
request), and ModelScope's errors."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

from model.test_download_hub import EXTRAS, STALL, _files, kill_then_resume, serving

pytestmark = pytest.mark.upstream

TOKEN = "ms-testTOKEN-0123456789abcdef"


@pytest.fixture(scope="module")
def hub(tiny_model):
    with serving(tiny_model, TOKEN) as h:
        yield h


def _env(tmp_path: Path, **extra: str) -> dict:
    drop = ("MODELSCOPE_API_TOKEN", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "MODELSCOPE_CACHE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "MODELSCOPE_HOME": str(tmp_path / "ms-home"), **extra}  # no stored login


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "ms-home")


def _ichain(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", "model", "download", "--source", "modelscope",
                           *args, "--python", str(runtime_python("hub"))],
                          capture_output=True, text=True, timeout=120, env=env or _env(tmp_path))


def test_download_is_byte_identical_and_reruns_as_a_no_op(hub, tiny_model, tmp_path):
    hub.requests.clear()
    out = tmp_path / "models" / "tiny"
    res = _ichain(tmp_path, "org/tiny", "-o", str(out), "--endpoint", hub.url)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "architecture    LlamaForCausalLM" in res.stdout  # the inspect summary ends the run
    got = _files(out)
    report = json.loads(got.pop("ichain-model.json"))
    # the same default selection as the hf path: other formats, original/ and optimizer state are skipped
    assert got == {**_files(tiny_model), "README.md": EXTRAS["README.md"]}
    assert sorted(report["skipped"]) == sorted(set(EXTRAS) - {"README.md"})
    assert report["source"] == "modelscope" and report["revision"] == "master" and report["endpoint"] == hub.url
    weights = next(f for f in report["files"] if f["name"] == "model.safetensors")
    assert weights["sha256"] == hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # no scratch, no log left behind
    # ModelScope's own endpoints were used (listing + per-file downloads), never the Hugging Face API
    assert hub.seen("GET", "/api/v1/models/org/tiny/repo/files?Revision=master")
    assert hub.seen("GET", "/api/v1/models/org/tiny/repo?Revision=master&FilePath=config.json")
    assert not hub.seen(path_part="/api/models/") and not hub.seen(path_part="/resolve/")
    assert not hub.seen(path_part="FilePath=model.gguf")
    before = len(hub.requests)
    again = _ichain(tmp_path, "org/tiny", "-o", str(out), "--endpoint", hub.url)
    assert again.returncode == 0 and "already holds org/tiny@master" in again.stderr, again.stderr
    assert len(hub.requests) == before  # nothing asked of the hub
    # an hf download into the same folder is another download: refused, not mixed in
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "model", "download", "org/tiny", "-o", str(out),
                          "--endpoint", hub.url, "--python", str(runtime_python("hub"))],
                         capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert res.returncode == 2 and "already exists" in res.stderr, res.stderr


def test_private_model_needs_the_token_and_never_stores_it(hub, tmp_path):
    hub.requests.clear()
    out = tmp_path / "priv"
    res = _ichain(tmp_path, "org/private", "-o", str(out), "--endpoint", hub.url)
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert f"{hub.url} rejected the request for org/private (HTTP 401" in err and "--token-env" in err, err
    assert "Traceback" not in res.stderr and not out.exists() and _names(tmp_path) == [".priv.log"]
    hub.requests.clear()
    res = _ichain(tmp_path, "org/private", "-o", str(out), "--endpoint", hub.url, "--token-env", "MS_TOKEN",
                  env=_env(tmp_path, MS_TOKEN=TOKEN))
    assert res.returncode == 0, res.stderr[-3000:]
    sent = [h for _, p, h in hub.requests if "/org/private/" in p]
    assert sent and all(h.get("authorization") == f"Bearer {TOKEN}" for h in sent)  # (and the m_session_id cookie)
    for path in [*out.rglob("*"), *(tmp_path / "ms-home").rglob("*")]:  # nothing stored it, not even a login
        assert path.is_dir() or TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in res.stdout + res.stderr


def test_killed_download_leaves_no_output_and_resumes(hub, tmp_path):
    kill_then_resume(hub, tmp_path, _ichain, _env(tmp_path), TOKEN, "MS_TOKEN", "--source", "modelscope",
                     min_partial=STALL // 2)


def test_errors_name_the_model_url_and_what_to_do(hub, tmp_path):
    res = _ichain(tmp_path, "org/tinny", "-o", str(tmp_path / "a"), "--endpoint", hub.url)
    assert res.returncode == 1
    assert f"org/tinny not found at {hub.url} (HTTP 404, {hub.url}/api/v1/models/org/tinny/repo/files" in res.stderr
    assert "check the spelling" in res.stderr and "Traceback" not in res.stderr
    res = _ichain(tmp_path, "org/tiny", "--revision", "v9", "-o", str(tmp_path / "a"), "--endpoint", hub.url)
    assert res.returncode == 1 and "(or has no revision 'v9')" in res.stderr, res.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = _ichain(tmp_path, "org/tiny", "-o", str(tmp_path / "a"), "--endpoint", dead,
                  env=_env(tmp_path, MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS="1"))  # the client retries 4x, 7 s
    assert res.returncode == 1 and f"cannot download org/tiny from {dead}" in res.stderr, res.stderr
    assert "Connection refused" in res.stderr and "Traceback" not in res.stderr
    assert _names(tmp_path) == [".a.log"]  # nothing to resume: no scratch left
