"""Pure helpers shared by the ichain process and the worker (no runtime needed)."""

from __future__ import annotations

import pytest

from internlm_chain.workers.agentrun.bench_check import TaskError, load_tasks, passes
from internlm_chain.workers.agentrun.toolspec import ToolSpecError, allowed, parse_tool, risk
from internlm_chain.workers.agentrun.urls import chat_url, cut_at_stop, models_url


@pytest.mark.parametrize("url", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/chat/completions"])
def test_any_url_form_reaches_chat_completions(url):
    assert chat_url(url) == "http://h:1/v1/chat/completions"
    assert models_url(url) == "http://h:1/v1/models"


def test_cut_at_the_earliest_stop_word():
    assert cut_at_stop("a Response: b Observation: c", ["Observation:", "Response:"]) == ("a ", True)
    assert cut_at_stop("plain", ["x"]) == ("plain", False)


@pytest.mark.parametrize("entry,spec", [
    ("Calculator", {"kind": "auto", "name": "Calculator"}),
    ("lagent:ArxivSearch", {"kind": "lagent", "name": "ArxivSearch"}),
    ("tools/w.py:Weather", {"kind": "file", "path": "tools/w.py", "attr": "Weather"}),
    ("http://127.0.0.1:16180", {"kind": "remote", "url": "http://127.0.0.1:16180", "names": []}),
    ("python", {"kind": "python"}),
    ({"name": "Calculator", "args": {"timeout": 5}}, {"kind": "auto", "name": "Calculator", "args": {"timeout": 5}}),
    ({"remote": "http://x", "names": ["A"]}, {"kind": "remote", "url": "http://x", "names": ["A"]}),
])
def test_tool_entries(entry, spec):
    assert parse_tool(entry) == spec


@pytest.mark.parametrize("entry", ["", "two words", "w.py:not-a-name", {"args": {}}, {"remote": "u", "x": 1}])
def test_bad_tool_entries(entry):
    with pytest.raises(ToolSpecError):
        parse_tool(entry)


def test_code_and_network_tools_need_allow():
    assert risk(parse_tool("python")) == "code" and risk(parse_tool("GoogleSearch")) == "network"
    assert risk(parse_tool("Calculator")) is None
    assert not allowed(parse_tool("python"), []) and allowed(parse_tool("python"), ["code"])
    assert allowed(parse_tool("lagent:ArxivSearch"), ["ArxivSearch"])


def test_tasks_and_checkers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "a", "answer": "42"}\n\n{"question": "b", "check": {"python": "float(answer) > 1"}}\n')
    tasks = load_tasks(path)
    assert [t["id"] for t in tasks] == ["1", "3"]
    assert passes(tasks[0], "The answer is 42.") == (True, "contained")
    assert passes(tasks[0], "4200")[0] is False and passes(tasks[0], "42.5")[0] is False
    assert passes(tasks[1], "3.5") == (True, "python")
    assert passes(tasks[1], "n/a")[0] is False and "ValueError" in passes(tasks[1], "n/a")[1]
    assert passes(tasks[0], None) == (False, "no final answer")


def test_task_file_problems_name_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "a", "answer": "1", "check": {"contains": "1"}}\n[1]\n')
    with pytest.raises(TaskError) as exc:
        load_tasks(path)
    assert "t.jsonl:1: give exactly one" in str(exc.value) and "t.jsonl:2: each line must be a JSON object" in str(exc.value)
