"""What happened in one agent run, in order: model calls, tool calls, the answer; with timings."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


class Recorder:
    """Filled by our LLM client and tool executor while a Lagent agent runs."""

    def __init__(self, live: bool = False):
        self.events: list[dict] = []
        self._returns: list[tuple[dict, Any]] = []  # tool event ↔ its ActionReturn (thought is set later)
        self.finished = False
        self.pending_thought: str | None = None  # AutoGPT states its thought in the JSON before the call
        self.pending_plan: str | None = None
        self._planned: list[tuple[str, str]] = []  # ReWOO: (thought, plan line) per step, in execution order
        self.live = live

    def llm(self, messages: list[dict], text: str, duration: float) -> None:
        self.events.append({"type": "llm", "response": text, "messages": len(messages),
                            "duration_s": round(duration, 4)})
        if self.live:
            print(f"  · model call {self.count('llm')}: {duration:.2f}s", file=sys.stderr, flush=True)

    def plan(self, steps: list[tuple[str, str]]) -> None:
        """ReWOO plans every step up front, then runs them in order; each call takes the next step."""
        self._planned = list(steps)

    def start_call(self) -> None:
        """A tool call begins (every executor call, finish included, so planned steps stay aligned)."""
        if self._planned:
            self.pending_thought, self.pending_plan = self._planned.pop(0)

    def tool(self, name: str, args: Any, action_return: Any, duration: float, valid: bool) -> dict:
        ok = getattr(action_return, "state", 0) == 0
        event = {"type": "tool", "name": name, "args": _jsonable(args), "thought": self.pending_thought,
                 "plan": self.pending_plan,
                 "result": action_return.format_result() if ok else None,
                 "error": None if ok else str(getattr(action_return, "errmsg", "") or "tool failed"),
                 "valid": valid, "duration_s": round(duration, 4)}
        self.pending_thought = self.pending_plan = None
        self.events.append(event)
        self._returns.append((event, action_return))
        return event

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e["type"] == kind)

    def fill_thoughts(self) -> None:
        """Lagent sets an action's thought after the executor returns; copy it into the events."""
        for event, ret in self._returns:
            thought = getattr(ret, "thought", None)
            if thought:
                event["thought"] = str(thought).strip()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def build(question: str, recorder: Recorder, *, answer: str | None, stop_reason: str, error: str | None,
          started: float, meta: dict) -> dict:
    tools = [e for e in recorder.events if e["type"] == "tool"]
    steps = list(recorder.events)
    if answer is not None and stop_reason == "answer":
        steps.append({"type": "answer", "content": answer})
    return {
        "question": question,
        **meta,
        "steps": steps,
        "final_answer": answer,
        "stop_reason": stop_reason,  # answer | turn_limit | error
        "error": error,
        "llm_calls": recorder.count("llm"),
        "tool_calls": len(tools),
        "valid_tool_calls": sum(1 for e in tools if e["valid"]),
        "failed_tool_calls": sum(1 for e in tools if e["error"]),
        "llm_s": round(sum(e["duration_s"] for e in recorder.events if e["type"] == "llm"), 4),
        "tool_s": round(sum(e["duration_s"] for e in tools), 4),
        "elapsed_s": round(time.monotonic() - started, 4),
    }


def render(t: dict) -> str:
    """The human view `ichain agent run` prints."""
    lines = [f"Question: {t['question']}"]
    for e in t["steps"]:
        if e["type"] == "tool":
            if e.get("thought"):
                lines.append(f"Thought: {e['thought']}")
            if e.get("plan"):
                lines.append(f"Plan step: {e['plan']}")
            lines.append(f"Tool call: {e['name']} {json.dumps(e['args'], ensure_ascii=False)}  ({e['duration_s']:.2f}s)")
            lines.append(f"Tool result: {e['result']}" if e["error"] is None else f"Tool error: {e['error']}")
    if t["stop_reason"] == "answer":
        lines.append(f"Final answer: {t['final_answer']}")
    elif t["stop_reason"] == "turn_limit":
        lines.append(f"Stopped: turn limit reached without a final answer ({t['llm_calls']} model calls)")
    else:
        lines.append(f"Error: {t['error']}")
    lines.append(f"({t['llm_calls']} model calls {t['llm_s']:.2f}s, {t['tool_calls']} tool calls "
                 f"{t['tool_s']:.2f}s, {t['elapsed_s']:.2f}s in all)")
    return "\n".join(lines)
