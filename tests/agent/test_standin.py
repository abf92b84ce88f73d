"""The whole path on CPU: the deploy stage's stand-in serves the tiny model; the agent stage uses its
Endpoint by default. A random model cannot follow ReAct, so the run must end cleanly at the turn limit."""

from __future__ import annotations

import json
import subprocess

import pytest
from agent_helpers import WORKERS, free_port, ichain

pytestmark = pytest.mark.upstream


def test_agent_against_the_cpu_standin_ends_at_the_turn_limit(tmp_path, agent_python):
    from tests.conftest import runtime_python

    serve_python = runtime_python("serve-cpu")
    model = tmp_path / "tiny"
    subprocess.run([str(serve_python), str(WORKERS / "tiny_model.py"), str(model)], check=True, capture_output=True)
    port = free_port()
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"""name: t
workdir: {tmp_path / "run"}
device: cpu
model: {{path: {model}}}
runtimes:
  overrides:
    serve-cpu: {{python: {serve_python}}}
stages:
  deploy: {{port: {port}, startup_timeout_s: 300}}
  agent:
    runtime: {{python: {agent_python}}}
    max_turns: 2
    generation: {{max_new_tokens: 8}}
""")
    try:
        res = ichain("run", chain, "--quiet", timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        agent = manifest["stages"]["agent"]
        assert agent["state"] == "done" and agent["metrics"]["turn_limit"] == 1 and agent["metrics"]["errors"] == 0
        t = json.loads((tmp_path / "run" / "agent" / "transcripts.json").read_text())["transcripts"][0]
        assert t["stop_reason"] == "turn_limit" and t["llm_calls"] == 2
        assert t["url"] == f"http://127.0.0.1:{port}" and t["model"] == str(model)
    finally:
        ichain("deploy", "stop", "-c", chain)
