"""User tools, remote tools, the python tool and every failure path of a run, with the real worker."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from agent_helpers import WORKERS, Reply, ScriptedOpenAI, agentrun, free_port, react_call, spec_for

pytestmark = pytest.mark.upstream

USER_TOOLS = '''
from agentlego.tools import BaseTool


class Weather(BaseTool):
    default_desc = "Tells the weather of a city."

    def apply(self, city: str) -> str:
        return f"sunny, 23 degrees in {city}"


class Boom(BaseTool):
    default_desc = "Always fails."

    def apply(self, text: str) -> str:
        raise ValueError("the boom tool exploded")
'''


def scripted_calls(*calls: str, final: str = "Thought: done.\nFinal Answer: done"):
    """Replies in order: each tool call, then the final answer (repeated)."""
    return [*calls, final]


def test_user_tool_from_file_and_a_raising_tool(agent_python, tmp_path):
    (tmp_path / "mytools.py").write_text(USER_TOOLS)
    tools = [f"{tmp_path}/mytools.py:Weather", f"{tmp_path}/mytools.py:Boom"]
    script = scripted_calls(react_call("Weather", {"city": "Shanghai"}), react_call("Boom", {"text": "x"}))
    with ScriptedOpenAI(script) as srv:
        proc, out = agentrun(agent_python, spec_for(srv, tools=tools), "run", "-q", "weather?", tmp=tmp_path)
        second, third = srv.text_of(1), srv.text_of(2)
    assert proc.returncode == 0, proc.stderr
    assert "sunny, 23 degrees in Shanghai" in second
    # the exception became an observation the model saw; the run went on to its answer
    assert "tool `Boom` failed" in third and "the boom tool exploded" in third
    t = out["transcripts"][0]
    assert t["stop_reason"] == "answer" and t["final_answer"] == "done"
    assert [s["error"] is None for s in t["steps"] if s["type"] == "tool"] == [True, False]
    assert t["failed_tool_calls"] == 1


def test_unknown_tool_from_the_model_is_an_observation(agent_python, tmp_path):
    with ScriptedOpenAI(scripted_calls(react_call("Nope", {"x": 1}))) as srv:
        proc, out = agentrun(agent_python, spec_for(srv), "run", "-q", "q", tmp=tmp_path)
        second = srv.text_of(1)
    assert proc.returncode == 0, proc.stderr
    assert "unknown tool `Nope`; available tools: Calculator" in second
    t = out["transcripts"][0]
    assert t["valid_tool_calls"] == 0 and t["tool_calls"] == 1 and t["stop_reason"] == "answer"


def test_bad_arguments_count_as_invalid_tool_calls(agent_python, tmp_path):
    with ScriptedOpenAI(scripted_calls(react_call("Calculator", "not json"))) as srv:
        proc, out = agentrun(agent_python, spec_for(srv), "run", "-q", "q", tmp=tmp_path)
        second = srv.text_of(1)
    assert proc.returncode == 0, proc.stderr
    assert "invalid json format" in second
    assert out["transcripts"][0]["valid_tool_calls"] == 0


def test_turn_limit_ends_cleanly(agent_python, tmp_path):
    with ScriptedOpenAI([react_call("Calculator", {"expression": "1+1"})]) as srv:
        spec = spec_for(srv, max_turns=3)
        proc, out = agentrun(agent_python, spec, "run", "-q", "loop forever", tmp=tmp_path)
        n = len(srv.requests)
    assert proc.returncode == 0, proc.stderr
    t = out["transcripts"][0]
    assert t["stop_reason"] == "turn_limit" and t["final_answer"] is None
    assert n == t["llm_calls"] == 3 and t["tool_calls"] == 3
    assert "turn limit reached" in proc.stdout


def test_server_down_fails_fast_in_one_line(agent_python, tmp_path):
    port = free_port()
    spec = {"agent": "react", "llm": {"url": f"http://127.0.0.1:{port}/v1", "served_name": "m", "timeout_s": 30},
            "tools": ["Calculator"]}
    started = time.monotonic()
    proc, out = agentrun(agent_python, spec, "run", "-q", "q", tmp=tmp_path)
    assert time.monotonic() - started < 30
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"agentrun: error: cannot reach the LLM endpoint http://127.0.0.1:{port}/v1: connection refused"]
    assert out is None and "Traceback" not in proc.stderr


def test_server_error_text_is_surfaced_after_bounded_retries(agent_python, tmp_path):
    reply = Reply(status=503, raw=json.dumps({"error": {"message": "engine is warming up"}}).encode())
    with ScriptedOpenAI([reply]) as srv:
        proc, out = agentrun(agent_python, spec_for(srv), "run", "-q", "q", "--errors-in-output", tmp=tmp_path)
        n = len(srv.requests)
    assert n == 2  # retries: 1
    assert proc.returncode == 0  # --errors-in-output: the failure is in the output file
    t = out["transcripts"][0]
    assert t["stop_reason"] == "error"
    assert "answered HTTP 503: engine is warming up (gave up after 2 attempts)" in t["error"]


def test_client_error_is_not_retried(agent_python, tmp_path):
    reply = Reply(status=404, raw=b'{"detail": "The model `m` does not exist."}')
    with ScriptedOpenAI([reply]) as srv:
        proc, _ = agentrun(agent_python, spec_for(srv), "run", "-q", "q", tmp=tmp_path)
        n = len(srv.requests)
    assert n == 1 and proc.returncode == 3
    assert "answered HTTP 404: The model `m` does not exist." in proc.stderr


def test_garbage_reply(agent_python, tmp_path):
    with ScriptedOpenAI([Reply(raw=b"<html>proxy login</html>", content_type="text/html")]) as srv:
        proc, out = agentrun(agent_python, spec_for(srv), "run", "-q", "q", tmp=tmp_path)
    assert proc.returncode == 3
    assert "returned something that is not an OpenAI chat completion: '<html>proxy login</html>'" in proc.stderr
    assert out["transcripts"][0]["stop_reason"] == "error"


def test_request_timeout_is_bounded(agent_python, tmp_path):
    with ScriptedOpenAI([Reply(content="late", delay_s=5)]) as srv:
        spec = spec_for(srv)
        spec["llm"].update(timeout_s=1, retries=0)
        started = time.monotonic()
        proc, _ = agentrun(agent_python, spec, "run", "-q", "q", tmp=tmp_path)
    assert proc.returncode == 3 and "timed out" in proc.stderr
    assert time.monotonic() - started < 25


def test_unknown_configured_tool_lists_the_available_ones(agent_python, tmp_path):
    with ScriptedOpenAI(["x"]) as srv:
        proc, _ = agentrun(agent_python, spec_for(srv, tools=["Calculater"]), "run", "-q", "q", tmp=tmp_path)
    assert proc.returncode == 2
    assert "unknown tool `Calculater`; AgentLego tools: " in proc.stderr and "Calculator" in proc.stderr


def test_python_tool_needs_allow_and_runs_with_limits(agent_python, tmp_path):
    with ScriptedOpenAI(["x"]) as srv:
        proc, _ = agentrun(agent_python, spec_for(srv, tools=["python"]), "run", "-q", "q", tmp=tmp_path)
    assert proc.returncode == 2 and "runs code: add it (or `code`) to `allow`" in proc.stderr

    script = scripted_calls(react_call("python", {"command": "print(sum(range(101)))"}),
                            react_call("python", {"command": "while True: pass"}),
                            react_call("python", {"command": "x = bytearray(2_000_000_000)"}))
    with ScriptedOpenAI(script) as srv:
        spec = spec_for(srv, tools=["python"], allow=["python"], python_tool={"timeout_s": 2, "memory_mb": 256})
        proc, out = agentrun(agent_python, spec, "run", "-q", "q", tmp=tmp_path)
        texts = [srv.text_of(i) for i in range(1, 4)]
    assert proc.returncode == 0, proc.stderr
    assert "Response:5050" in texts[0]
    assert "ran longer than 2s" in texts[1]
    assert "MemoryError" in texts[2]
    assert out["transcripts"][0]["stop_reason"] == "answer"


def test_remote_tools_from_a_real_agentlego_server(agent_python, tmp_path):
    port = free_port()
    server_log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(agent_python), "-m", "agentrun", "tools", "serve", "Calculator", "--port",
                               str(port)], env={"PYTHONPATH": str(WORKERS), "PATH": "/usr/bin:/bin"},
                              stdout=server_log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/openapi.json", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        script = scripted_calls(react_call("Calculator", {"expression": "2**20 + 1"}))
        with ScriptedOpenAI(script) as srv:
            proc, out = agentrun(agent_python, spec_for(srv, tools=[url]), "run", "-q", "q", tmp=tmp_path)
            second = srv.text_of(1)
        assert proc.returncode == 0, proc.stderr
        assert "1048577" in second
        assert out["transcripts"][0]["steps"][1]["result"] == "1048577"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_unreachable_tool_server_is_reported_before_the_run(agent_python, tmp_path):
    with ScriptedOpenAI(["x"]) as srv:
        url = f"http://127.0.0.1:{free_port()}"
        proc, _ = agentrun(agent_python, spec_for(srv, tools=[url]), "run", "-q", "q", tmp=tmp_path)
        assert srv.requests == []
    assert proc.returncode == 2 and f"cannot reach the tool server {url}" in proc.stderr
