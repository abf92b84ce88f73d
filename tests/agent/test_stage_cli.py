"""The agent stage through the real `ichain` CLI: jobs, validation, manifest metrics, ad-hoc commands."""

from __future__ import annotations

import json
import re

import pytest
from agent_helpers import ScriptedOpenAI, ichain, last_number, react_call

upstream = pytest.mark.upstream


def calculator_model(body):
    msgs = body["messages"]
    if not any("Response:" in str(m["content"]) for m in msgs[1:]):
        question = msgs[-1]["content"]
        expr = question.split("What is ", 1)[-1].rstrip("?")
        return react_call("Calculator", {"expression": expr})
    return f"Thought: got it.\nFinal Answer: {last_number(msgs[-1]['content'])}"


def chain(tmp_path, agent_python, url: str, extra: str = "", tools: str = "[Calculator]") -> str:
    text = f"""name: agent-test
workdir: wd
device: cpu
stages:
  agent:
    runtime: {{python: {agent_python}}}
    llm: {{url: {url}, served_name: scripted-model}}
    request_timeout_s: 10
    tools: {tools}
{extra}"""
    path = tmp_path / "chain.yaml"
    path.write_text(text)
    return str(path)


TASKS = "\n".join(json.dumps(t) for t in [
    {"question": "What is 6*7?", "answer": "42"},
    {"question": "What is 2**10?", "check": {"regex": r"^10\d4$"}},
    {"question": "What is 3+4?", "check": {"python": "int(answer) == 7"}, "tools": ["Calculator"]},
    {"question": "What is 1+1?", "check": {"contains": "3"}},  # the model is right, the task is wrong: a failure
]) + "\n"


@upstream
def test_stage_runs_questions_and_bench_into_the_manifest(tmp_path, agent_python):
    (tmp_path / "tasks.jsonl").write_text(TASKS)
    with ScriptedOpenAI(calculator_model) as srv:
        path = chain(tmp_path, agent_python, srv.base_url,
                     '    questions: ["What is 12*12?"]\n    bench: tasks.jsonl\n')
        res = ichain("agent", "run", "-c", path)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "wd" / "manifest.json").read_text())
    rec = manifest["stages"]["agent"]
    assert rec["state"] == "done"
    assert rec["metrics"]["bench_success_rate"] == 0.75
    assert rec["metrics"]["bench"]["tasks"] == 4 and rec["metrics"]["bench"]["tool_call_validity"] == 1.0
    assert rec["metrics"]["answered"] == 1
    transcript = json.loads((tmp_path / "wd" / "agent" / "transcripts.json").read_text())
    assert transcript["transcripts"][0]["final_answer"] == "144"
    assert rec["outputs"]["transcript"]["kind"] == "AgentTranscript"
    assert rec["outputs"]["bench"]["path"].endswith("agent/bench.json")
    bench = json.loads((tmp_path / "wd" / "agent" / "bench.json").read_text())
    assert [r["success"] for r in bench["tasks"]] == [True, True, True, False]
    assert bench["tasks"][3]["why"] == "does not contain '3'"


@upstream
def test_stage_with_endpoint_down_fails_in_one_line(tmp_path, agent_python):
    from agent_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    res = ichain("agent", "run", "-c", chain(tmp_path, agent_python, url), "--quiet")
    assert res.returncode == 1
    assert f"agent: cannot reach the LLM endpoint {url}: connection refused" in res.stderr
    assert "Traceback" not in res.stderr
    manifest = json.loads((tmp_path / "wd" / "manifest.json").read_text())
    assert manifest["stages"]["agent"]["state"] == "failed"


@upstream
def test_validation_names_each_bad_tool_before_anything_runs(tmp_path, agent_python):
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\nnot json\n')
    path = chain(tmp_path, agent_python, "http://127.0.0.1:9/v1", "    bench: bad.jsonl\n",
                 tools="[Calculater, python, OCR, nofile.py:Tool]")
    res = ichain("config", "validate", path)
    err = res.stderr
    assert res.returncode == 2, err
    assert "stages.agent.tools.0: unknown tool `Calculater`" in err and "AgentLego tools: " in err
    assert "stages.agent.tools.1: tool `python` runs code and is not allowed" in err
    assert "stages.agent.tools.2: tool `OCR` cannot run in the agent runtime: OCR requires easyocr" in err
    assert "stages.agent.tools.3: tool file not found" in err
    assert 'bad.jsonl:1: give exactly one of "answer" or "check"' in err and "bad.jsonl:2: not JSON" in err
    assert (tmp_path / "wd").exists() is False


@upstream
def test_adhoc_run_json_and_steps(tmp_path, agent_python):
    with ScriptedOpenAI(calculator_model) as srv:
        res = ichain("agent", "run", "What is 9*9?", "--endpoint", srv.base_url, "--served-name", srv.model,
                     "--tools", "Calculator", "--python", agent_python, "--json")
        assert res.returncode == 0, res.stderr
        t = json.loads(res.stdout)
        assert t["final_answer"] == "81" and t["steps"][1]["name"] == "Calculator"
        res = ichain("agent", "run", "What is 9*9?", "--endpoint", srv.base_url + "/chat/completions",
                     "--served-name", srv.model, "--python", agent_python)
    assert res.returncode == 0, res.stderr
    assert 'Tool call: Calculator {"expression": "9*9"}' in res.stdout
    assert "Tool result: 81" in res.stdout and "Final answer: 81" in res.stdout


@upstream
def test_chat_keeps_history(tmp_path, agent_python):
    with ScriptedOpenAI(calculator_model) as srv:
        res = ichain("agent", "chat", "--endpoint", srv.base_url, "--served-name", srv.model, "--python",
                     agent_python, input="What is 2+3?\nWhat is 4+4?\n\n")
        last = srv.requests[-1]
    assert res.returncode == 0, res.stderr
    assert "Final answer: 5" in res.stdout and "Final answer: 8" in res.stdout
    contents = [m["content"] for m in last["messages"]]
    assert "What is 2+3?" in contents and "5" in contents  # the earlier turn travels with the new one


@upstream
def test_tools_list_shows_parameters_and_chain_tools(tmp_path, agent_python):
    (tmp_path / "mytool.py").write_text(
        "from agentlego.tools import BaseTool\n\nclass Echo(BaseTool):\n    default_desc = 'Echoes.'\n\n"
        "    def apply(self, text: str) -> str:\n        return text\n")
    path = chain(tmp_path, agent_python, "http://127.0.0.1:9/v1", tools="[Calculator, mytool.py:Echo]")
    res = ichain("agent", "tools", "list", "--json", "-c", path)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert [(p["name"], p["required"]) for p in rows["Calculator"]["parameters"]] == [("expression", True)]
    assert rows["Echo"]["library"] == "chain" and rows["Echo"]["parameters"][0]["name"] == "text"
    assert rows["OCR"]["missing"] and rows["python"]["needs_allow"] == "code"


def test_plan_golden(tmp_path, golden):
    """The stage's exact jobs and spec (no runtime needed: the interpreter path is only printed)."""
    (tmp_path / "tasks.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "chain.yaml").write_text("""name: agent-golden
workdir: wd
device: cpu
stages:
  agent:
    runtime: {python: /opt/agent/bin/python}
    agent: internlm2
    llm: {url: "http://127.0.0.1:23333/v1", served_name: internlm2-chat-1_8b, api_key_env: HOME}
    generation: {max_new_tokens: 256, stop_words: ["Observation:"]}
    max_turns: 6
    tools: [Calculator, {name: tools/w.py:Weather, args: {unit: C}}, python, {remote: "http://127.0.0.1:16180", names: [Calculator]}]
    allow: [python]
    python_tool: {timeout_s: 5, memory_mb: 256}
    questions: ["What is 2+2?"]
    bench: tasks.jsonl
""")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "w.py").write_text("")
    res = ichain("agent", "run", "-c", tmp_path / "chain.yaml", "--dry-run", "--show-files")
    assert res.returncode == 0, res.stderr
    import internlm_chain

    workers = str(__import__("pathlib").Path(internlm_chain.__file__).parent / "workers")
    text = re.sub(r"fingerprint [0-9a-f]+", "fingerprint <FP>", res.stdout)
    golden.check("agent/plan.txt", text, replace={str(tmp_path): "<TMP>", workers: "<WORKERS>"})


def test_no_llm_and_no_deploy_is_an_error(tmp_path):
    (tmp_path / "chain.yaml").write_text("name: x\ndevice: cpu\nstages:\n  agent:\n    runtime: {python: /nope/python}\n")
    res = ichain("config", "validate", tmp_path / "chain.yaml")
    assert res.returncode == 2
    assert "stages.agent.llm: no model for the agent" in res.stderr


def test_adhoc_flags_without_question_are_refused(tmp_path):
    res = ichain("agent", "run", "--endpoint", "http://x", "-c", tmp_path / "none.yaml")
    assert res.returncode == 2 and "need a QUESTION" in res.stderr


def test_adhoc_missing_runtime_is_one_line(tmp_path):
    res = ichain("agent", "run", "hi", "--endpoint", "http://127.0.0.1:9", "--python", tmp_path / "nope")
    assert res.returncode == 2
    assert "the agent runtime is not there" in res.stderr and "Traceback" not in res.stderr


def test_bench_file_errors_name_the_line(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"question": "q", "check": {"regex": "("}}\n')
    res = ichain("agent", "bench", tmp_path / "t.jsonl", "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2 and "t.jsonl:1: \"check.regex\" does not compile" in res.stderr
