"""Real Lagent agents with real AgentLego tools against a scripted OpenAI-compatible server.

The scripted model answers with the number it finds in the tool's observation, so the final answer can
only be right if the tool result really reached the model in the next request.
"""

from __future__ import annotations

import json
import re

import pytest
from agent_helpers import ScriptedOpenAI, agentrun, last_number, react_call, spec_for

pytestmark = pytest.mark.upstream

QUESTION = "What is 1234 * 5678?"
PRODUCT = str(1234 * 5678)


def _saw_result(body: dict) -> bool:
    return any(PRODUCT in str(m.get("content")) for m in body["messages"][1:])


def react(body):
    if not _saw_result(body):
        return react_call("Calculator", {"expression": "1234 * 5678"})
    return f"Thought: the tool answered.\nFinal Answer: {last_number(body['messages'][-1]['content'])}"


def _anywhere(body: dict) -> bool:
    return any(PRODUCT in str(m.get("content")) for m in body["messages"])


def rewoo(body):
    if not _anywhere(body):  # the planner; the solver's prompt carries the workers' evidence
        return 'Plan: multiply the numbers\n#E1 = Calculator[{"expression": "1234 * 5678"}]'
    evidence = re.search(r"Response: (-?\d+)", body["messages"][-1]["content"])
    return f"The product is {evidence.group(1)}."


def internlm2(body):
    if not _saw_result(body):
        call = {"name": "Calculator", "parameters": {"expression": "1234 * 5678"}}
        return f"Let me compute.<|action_start|><|plugin|>\n{json.dumps(call)}<|action_end|>\n"
    return f"The product is {last_number(body['messages'][-1]['content'])}."


def autogpt(body):
    thoughts = {"text": "compute", "reasoning": "a tool is exact", "plan": "- multiply", "criticism": "none",
                "speak": "computing"}
    if not _saw_result(body):
        return json.dumps({"thoughts": thoughts, "command": {"name": "Calculator",
                                                             "args": {"expression": "1234 * 5678"}}})
    seen = next(m["content"] for m in body["messages"] if PRODUCT in str(m["content"]))
    return json.dumps({"thoughts": thoughts, "command": {"name": "FinishAction",
                                                         "args": {"response": f"It is {last_number(seen)}"}}})


@pytest.mark.parametrize("kind,script", [("react", react), ("rewoo", rewoo), ("internlm2", internlm2),
                                         ("autogpt", autogpt)])
def test_agent_uses_calculator_and_answers_from_its_result(agent_python, tmp_path, kind, script):
    with ScriptedOpenAI(script) as srv:
        proc, out = agentrun(agent_python, spec_for(srv, kind), "run", "--question", QUESTION, tmp=tmp_path)
        requests = list(srv.requests)
    assert proc.returncode == 0, proc.stderr
    t = out["transcripts"][0]
    assert t["stop_reason"] == "answer" and t["agent"] == kind
    assert PRODUCT in t["final_answer"]
    tools = [s for s in t["steps"] if s["type"] == "tool"]
    assert [(s["name"], s["args"], s["result"]) for s in tools] == [("Calculator", {"expression": "1234 * 5678"},
                                                                     PRODUCT)]
    # the first request has no result yet; the next one carries the tool's observation
    assert not _anywhere(requests[0]) and _anywhere(requests[1])
    assert all(r["model"] == srv.model for r in requests)
    assert t["llm_calls"] == len(requests) == 2
    assert "Tool result: " + PRODUCT in proc.stdout and "Final answer:" in proc.stdout


def test_react_stop_words_cut_invented_results(agent_python, tmp_path):
    with ScriptedOpenAI(react) as srv:
        proc, out = agentrun(agent_python, spec_for(srv), "run", "--question", QUESTION, tmp=tmp_path)
        first_reply_echo = srv.requests[1]["messages"]
    assert "Response:" in srv.requests[0].get("stop", [])
    # what the model "invented" after `Response:` never reaches the next prompt; the real result does
    assert not any("999999" in str(m["content"]) for m in first_reply_echo)
    assert out["transcripts"][0]["steps"][0]["response"].endswith("Action Input: {\"expression\": \"1234 * 5678\"}\n")


def test_stock_autogpt_is_broken_and_ours_is_not(agent_python, tmp_path):
    """Why FixedAutoGPTProtocol exists: Lagent 0.2.4 fails on its first successful tool call."""
    import subprocess

    code = ("from lagent.agents.autogpt import AutoGPTProtocol\n"
            "from lagent.schema import ActionReturn\n"
            "try:\n    AutoGPTProtocol().format_response(ActionReturn(type='Calculator', result=[]))\n"
            "except UnboundLocalError as e:\n    print('broken', e)\n")
    res = subprocess.run([str(agent_python), "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith("broken"), (res.stdout, res.stderr)


def test_rewoo_transcript_pairs_each_tool_call_with_its_plan_step(agent_python, tmp_path):
    """The planner's `Plan:` line is the thought behind each call; a re-planned reply replaces the bad one."""
    doubled = str(1234 * 5678 * 2)
    bad = 'Plan: multiply\nPlan: and then?\n#E1 = Calculator[{"expression": "1234 * 5678"}]'
    good = ('Plan: multiply the numbers\n#E1 = Calculator[{"expression": "1234 * 5678"}]\n'
            'Plan: double the product\n#E2 = Calculator[{"expression": "#E1 * 2"}]')

    def script(body):
        text = "\n".join(str(m.get("content")) for m in body["messages"])
        if doubled in text:  # the solver: both steps' evidence arrived
            return f"It is {doubled}."
        return good if "Response Format Error" in text else bad

    with ScriptedOpenAI(script) as srv:
        proc, out = agentrun(agent_python, spec_for(srv, "rewoo"), "run", "--question", QUESTION, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    t = out["transcripts"][0]
    assert t["stop_reason"] == "answer" and doubled in t["final_answer"] and t["llm_calls"] == 3
    tools = [s for s in t["steps"] if s["type"] == "tool"]
    assert [(s["thought"], s["plan"], s["args"], s["result"]) for s in tools] == [
        ("multiply the numbers", '#E1 = Calculator[{"expression": "1234 * 5678"}]', {"expression": "1234 * 5678"},
         PRODUCT),
        ("double the product", '#E2 = Calculator[{"expression": "#E1 * 2"}]', {"expression": f"{PRODUCT} * 2"},
         doubled),
    ]
    assert "Thought: double the product\nPlan step: #E2 = Calculator" in proc.stdout
