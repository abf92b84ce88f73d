"""The CPU stand-in for real: start in the background, readiness, chat (plain + SSE), status, stop twice;
and an engine that dies during start-up (corrupt weights). Two server starts in all (~20-40 s each)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, runtime_python
from tests.deploy.chains import chain_text

from internlm_chain.stages.deploy import client, service

pytestmark = pytest.mark.upstream

TINY = REPO / "src" / "internlm_chain" / "workers" / "tiny_model.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ichain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          timeout=900, env=os.environ.copy())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run([str(runtime_python("serve-cpu")), str(TINY), str(out)], check=True, capture_output=True)
    return out


def standin_chain(write_chain, model: Path, workdir: Path, port: int, timeout: int = 300) -> Path:
    extra = f"runtimes:\n  overrides:\n    serve-cpu: {{python: {runtime_python('serve-cpu')}}}\n"
    return write_chain(chain_text(model, workdir, device="cpu", extra=extra,
                                  deploy=f"port: {port}\nstartup_timeout_s: {timeout}"))


def test_serve_chat_status_stop(write_chain, tiny_model, tmp_path):
    port = free_port()
    chain = standin_chain(write_chain, tiny_model, tmp_path / "run", port)
    res = ichain("deploy", "serve", "-c", str(chain))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stderr.count("no GPU: serving with the CPU stand-in") == 1 and "ready after" in res.stderr
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["stages"]["deploy"]["state"] == "done"
        endpoint = manifest["stages"]["deploy"]["outputs"]["endpoint"]
        assert endpoint["kind"] == "Endpoint" and endpoint["path"] == f"http://127.0.0.1:{port}"
        assert endpoint["served_name"] == str(tiny_model) and endpoint["chat_template"] == "internlm2_chat"

        # the server outlived the job that started it, and its logs survived the staging rename
        st = service.status(service.services_dir(tmp_path / "run"))
        assert st.state == "up" and Path(st.services[0].log).is_file()

        url, name = endpoint["path"], endpoint["served_name"]
        msgs = [{"role": "user", "content": "What is 2 + 3?"}]
        plain = client.chat(url, name, msgs, max_tokens=6)
        assert plain.completion_tokens == 6 and plain.text
        parts = list(client.stream_chat(url, name, msgs, max_tokens=6))
        final = parts[-1]
        assert isinstance(final, client.Reply) and len(parts) >= 2 and final.completion_tokens == 6
        assert "".join(p for p in parts[:-1]) == final.text

        res = ichain("deploy", "chat", "-c", str(chain), "-m", "hello", "-m", "again", "--max-tokens", "4")
        assert res.returncode == 0 and len(res.stdout.strip().splitlines()) >= 1, res.stderr

        res = ichain("deploy", "status", "-c", str(chain))
        assert res.returncode == 0 and res.stdout.startswith("up: ")
        res = ichain("deploy", "serve", "-c", str(chain))  # alive and healthy → nothing to do
        assert res.returncode == 0 and "up to date" in res.stdout
    finally:
        first = ichain("deploy", "stop", "-c", str(chain))
    assert first.returncode == 0 and "stopped 1 process group" in first.stdout
    second = ichain("deploy", "stop", "-c", str(chain))
    assert second.returncode == 0 and "nothing running" in second.stdout
    res = ichain("deploy", "status", "-c", str(chain))
    assert res.returncode == 1 and "stopped" in res.stdout
    with pytest.raises(client.ClientError):
        client.chat(f"http://127.0.0.1:{port}", str(tiny_model), [{"role": "user", "content": "hi"}], timeout=5)


def test_engine_dies_during_startup(write_chain, tiny_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # corrupt weights: loading fails
    chain = standin_chain(write_chain, broken, tmp_path / "run", free_port())
    res = ichain("deploy", "serve", "-c", str(chain))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "exited with code" in res.stderr and "during start-up" in res.stderr
    assert "last lines of" in res.stderr and "safetensors" in res.stderr.lower()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["deploy"]["state"] == "failed"
    res = ichain("deploy", "status", "-c", str(chain))
    assert res.returncode == 1 and res.stdout.startswith("dead")


def test_server_killed_then_restarted(write_chain, tiny_model, tmp_path):
    """A server that dies (kill -9) comes back when deploy is asked for, as the same endpoint; a plain
    re-run of the chain leaves it stopped (nothing that uses it has work to do)."""
    import signal
    import time

    from internlm_chain.procs import pid_alive

    port = free_port()
    workdir = tmp_path / "run"
    chain = standin_chain(write_chain, tiny_model, workdir, port)
    res = ichain("deploy", "serve", "-c", str(chain))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        first = json.loads((workdir / "manifest.json").read_text())["stages"]["deploy"]
        [pid] = first["outputs"]["endpoint"]["meta"]["pids"]
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        res = ichain("deploy", "status", "-c", str(chain))
        assert res.returncode == 1 and res.stdout.startswith("dead"), res.stdout

        res = ichain("run", str(chain), "--json")
        assert res.returncode == 0, res.stderr
        assert [o["status"] for o in json.loads(res.stdout)["stages"]] == ["up to date (stopped)"], res.stdout
        assert service.status(service.services_dir(workdir)).state == "dead"

        res = ichain("deploy", "serve", "-c", str(chain), "--dry-run", "--json")
        assert res.returncode == 0 and [j["name"] for j in json.loads(res.stdout)[0]["jobs"]] == ["serve"]

        res = ichain("deploy", "serve", "-c", str(chain))
        assert res.returncode == 0 and "ready after" in res.stderr, res.stdout + res.stderr
        again = json.loads((workdir / "manifest.json").read_text())["stages"]["deploy"]
        assert again["state"] == "done" and again["fingerprint"] == first["fingerprint"]
        assert again["started"] > first["started"]
        ep1, ep2 = first["outputs"]["endpoint"], again["outputs"]["endpoint"]
        assert (ep2["path"], ep2["served_name"], ep2["fingerprint"]) == (ep1["path"], ep1["served_name"],
                                                                         ep1["fingerprint"])
        [new_pid] = ep2["meta"]["pids"]
        assert new_pid != pid and pid_alive(new_pid)
        assert service.status(service.services_dir(workdir)).state == "up"
        reply = client.chat(ep2["path"], ep2["served_name"], [{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.completion_tokens == 3
    finally:
        ichain("deploy", "stop", "-c", str(chain))
