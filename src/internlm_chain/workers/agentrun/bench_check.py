"""Agent benchmark tasks (stdlib only; the ichain process validates TASKS.jsonl with it before a run).

One JSON object per line:
  {"question": "...", "answer": "42"}                    the answer appears as a whole word/number
  {"question": "...", "check": {"contains": "Paris"}}    case-insensitive substring
  {"question": "...", "check": {"regex": "\\b4\\d\\b"}}   re.search on the final answer
  {"question": "...", "check": {"python": "abs(float(answer) - 3.14) < 0.01"}}
Optional: "id", "tools" (tool names the agent is expected to call).
The python check is an expression over `answer` (str), `transcript` (dict) and a few builtins; it comes
from the user's own task file and runs in the agent process, not in a sandbox.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

CHECK_KINDS = ("contains", "regex", "python")
_SAFE_BUILTINS = {"abs": abs, "float": float, "int": int, "len": len, "str": str, "round": round, "min": min,
                  "max": max, "any": any, "all": all, "sorted": sorted, "set": set, "list": list, "bool": bool}


class TaskError(ValueError):
    pass


def load_tasks(path: str | Path) -> list[dict]:
    """Parse and check every line; all problems at once, each naming its line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read: {exc.strerror or exc}") from None
    tasks, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
        except ValueError as exc:
            problems.append(f"{path}:{n}: not JSON ({exc.msg})")
            continue
        problem = task_problem(task)
        if problem:
            problems.append(f"{path}:{n}: {problem}")
            continue
        task.setdefault("id", str(n))
        tasks.append(task)
    if problems:
        raise TaskError("; ".join(problems))
    if not tasks:
        raise TaskError(f"{path}: no tasks (one JSON object per line)")
    return tasks


def task_problem(task) -> str | None:
    if not isinstance(task, dict):
        return "each line must be a JSON object"
    if not isinstance(task.get("question"), str) or not task["question"].strip():
        return '"question" (a non-empty string) is missing'
    has_answer = "answer" in task
    check = task.get("check")
    if has_answer == (check is not None):
        return 'give exactly one of "answer" or "check"'
    if check is not None:
        if not isinstance(check, dict) or len(check) != 1 or next(iter(check)) not in CHECK_KINDS:
            return '"check" must be one of {"contains": …}, {"regex": …}, {"python": …}'
        kind, value = next(iter(check.items()))
        if not isinstance(value, str):
            return f'"check.{kind}" must be a string'
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                return f'"check.regex" does not compile: {exc}'
        if kind == "python":
            try:
                compile(value, "<check>", "eval")
            except SyntaxError as exc:
                return f'"check.python" is not a Python expression: {exc.msg}'
    tools = task.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
        return '"tools" must be a list of tool names'
    return None


def _normal(text: str) -> str:
    return " ".join(str(text).strip().lower().rstrip(".").split())


def passes(task: dict, answer: str | None, transcript: dict | None = None) -> tuple[bool, str]:
    """(success, why) for one task."""
    if answer is None:
        return False, "no final answer"
    if "answer" in task:
        expected = _normal(task["answer"])
        got = _normal(answer)
        if got == expected:
            return True, "exact"
        if re.search(rf"(?<![\w.]){re.escape(expected)}(?![\w]|\.\d)", got):
            return True, "contained"
        return False, f"expected {task['answer']!r}"
    kind, value = next(iter(task["check"].items()))
    if kind == "contains":
        ok = value.lower() in answer.lower()
        return ok, "contains" if ok else f"does not contain {value!r}"
    if kind == "regex":
        ok = re.search(value, answer) is not None
        return ok, "regex" if ok else f"does not match {value!r}"
    try:
        ok = bool(eval(value, {"__builtins__": _SAFE_BUILTINS, "math": math, "re": re},
                       {"answer": answer, "transcript": transcript or {}}))
    except Exception as exc:  # the user's expression failing counts as a failed check, with the reason
        return False, f"check raised {type(exc).__name__}: {exc}"
    return ok, "python" if ok else "python check false"
