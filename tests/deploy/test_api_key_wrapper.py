"""The API key reaches LMDeploy in-process, never through argv: LMDeploy's real proxy (it runs on CPU,
unlike api_server) started through workers/deploy_keyed.py exactly as the supervisor starts it,
refuses requests without the key, accepts each configured key, and no process shows a key in its
arguments. Skipped where the multi-GB `lmdeploy` runtime is not installed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.deploy.test_lmdeploy_config import lmdeploy_python
from tests.support.procs import descendants

from internlm_chain.stages.deploy.render import KEYED_WORKER

pytestmark = pytest.mark.upstream

KEYS = "sk-first-7f3a,sk-second-91c2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, key: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_proxy_gets_keys_from_the_environment_not_argv(tmp_path):
    python = lmdeploy_python()
    port = free_port()
    env = {**os.environ, "T_DEPLOY_KEYS": KEYS}
    log = open(tmp_path / "proxy.log", "wb")
    proc = subprocess.Popen([python, str(KEYED_WORKER), "--key-env", "T_DEPLOY_KEYS", "--", "serve", "proxy",
                             "--server-name", "127.0.0.1", "--server-port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1/models"
    try:
        deadline = time.monotonic() + 180
        while get(url) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "proxy.log").read_text()[-3000:]
        assert get(url) == 401 and get(url, "sk-wrong") == 401
        assert get(url, "sk-first-7f3a") == 200 and get(url, "sk-second-91c2") == 200
        for pid in [proc.pid, *descendants(proc.pid)]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert "sk-first" not in cmdline and "sk-second" not in cmdline, cmdline
            assert "--api-keys" not in cmdline
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert "sk-first" not in (tmp_path / "proxy.log").read_text(errors="replace")


def test_missing_key_variable_is_refused(tmp_path):
    python = lmdeploy_python()
    env = {k: v for k, v in os.environ.items() if k != "T_DEPLOY_KEYS"}
    res = subprocess.run([python, str(KEYED_WORKER), "--key-env", "T_DEPLOY_KEYS", "--", "serve", "proxy"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "T_DEPLOY_KEYS (api_key_env) is not set" in res.stderr
