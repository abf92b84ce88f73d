"""Build a Lagent agent of the chosen kind over our model client and executor; fix what 0.2.4 breaks.

AutoGPT in Lagent 0.2.4: `AutoGPTProtocol.format_response` reads `response` before assigning it
(UnboundLocalError on the first successful tool call); its parser returns the NoAction *object* where the
executor expects a name, lets `ast.literal_eval` reject JSON's true/false/null with an uncaught
ValueError, and hands the finish command's argument mapping to FinishAction, which wants the text.
InternLM2 protocol: a tool call that is not JSON with `name` and `parameters` makes Lagent skip the turn
silently (or raise KeyError); we turn it into an observation the model sees.
ReWOO: the planner's `Plan:` lines are the thoughts behind its tool calls, but Lagent hands the executor only
name and input; our protocol passes the parsed plan to the recorder, which pairs it with the calls in order.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from lagent.agents import ReAct, ReWOO
from lagent.agents.autogpt import AutoGPT, AutoGPTProtocol
from lagent.agents.internlm2_agent import Internlm2Agent, Internlm2Protocol
from lagent.agents.react import ReActProtocol
from lagent.agents.rewoo import ReWOOProtocol
from lagent.schema import ActionStatusCode

from .tools import MALFORMED, SafeExecutor

KINDS = ("react", "rewoo", "autogpt", "internlm2")
# stop words each protocol needs so the model cannot write the tool's result itself
PROTOCOL_STOP_WORDS = {
    "react": ["Response:"],
    "rewoo": [],
    "autogpt": [],
    "internlm2": ["<|action_end|>", "<|im_end|>"],
}


class FixedAutoGPTProtocol(AutoGPTProtocol):
    def __init__(self, recorder: Any, **kwargs):
        super().__init__(**kwargs)
        self.recorder = recorder

    def parse(self, response: str, action_executor):
        text = response.strip()
        if text.startswith("```"):
            text = text.strip("`")
            text = text[4:] if text.startswith("json") else text
        try:
            data = json.loads(text)
        except ValueError:
            try:
                data = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                return action_executor.no_action.name, (
                    f"Your response could not be parsed as JSON ({exc}). Reply with the JSON format only.")
        if not isinstance(data, dict) or not isinstance(data.get("command"), dict) or "name" not in data["command"]:
            return action_executor.no_action.name, 'The reply needs a "command" object with "name" and "args".'
        thoughts = data.get("thoughts")
        if isinstance(thoughts, dict) and thoughts.get("text"):
            self.recorder.pending_thought = str(thoughts["text"])
        name = str(data["command"]["name"])
        args = data["command"].get("args") or {}
        if name == action_executor.finish_action.name:
            # FinishAction takes the answer text, not the argument mapping
            if isinstance(args, dict):
                args = args.get("response", next(iter(args.values()), "")) if args else ""
            return name, str(args)
        return name, args

    def format_response(self, action_return) -> dict:
        if action_return.state == ActionStatusCode.SUCCESS:
            content = f"Command {action_return.type} returned: {action_return.format_result()}"
        else:
            content = str(action_return.errmsg)
        return dict(role="system", content=content)


class FixedAutoGPT(AutoGPT):
    def chat(self, goal, **kwargs):
        if not isinstance(goal, str):  # chat history: AutoGPT takes one goal text
            goal = "\n".join(f"{m['role']}: {m['content']}" for m in goal)
        return super().chat(goal, **kwargs)


class SafeInternlm2Protocol(Internlm2Protocol):
    def __init__(self, recorder: Any, **kwargs):
        super().__init__(**kwargs)
        self.recorder = recorder

    def parse(self, message, plugin_executor=None, interpreter_executor=None):
        name, language, action = super().parse(message, plugin_executor, interpreter_executor)
        if name == "plugin":
            try:
                call = json.loads(action)
                ok = isinstance(call, dict) and "name" in call and isinstance(call.get("parameters", {}), dict)
            except ValueError:
                ok = False
            if not ok:
                action = json.dumps({"name": MALFORMED, "parameters": {"raw": action.strip()}})
            else:
                call.setdefault("parameters", {})
                action = json.dumps(call)
        elif name is None:
            self.recorder.finished = True
        return name, language, action


class RecordingReWOOProtocol(ReWOOProtocol):
    def __init__(self, recorder: Any, **kwargs):
        super().__init__(**kwargs)
        self.recorder = recorder

    def parse_worker(self, message: str):
        thoughts, actions, inputs = super().parse_worker(message)  # raises on a malformed plan: Lagent re-asks
        # the same `#E<n> = ...` units Lagent matched, whole, so the transcript keeps the #E references
        lines = [line.strip() for line in re.findall(r"(#E[0-9]* = .+)", message)]
        self.recorder.plan(list(zip(thoughts, lines, strict=True)))  # Lagent asserted equal counts
        return thoughts, actions, inputs


def build_agent(kind: str, llm: Any, plugins: list, interpreters: list, recorder: Any, max_turns: int):
    if kind == "internlm2":
        plugin_exec = SafeExecutor(plugins, recorder) if plugins else None
        interp_exec = SafeExecutor(interpreters, recorder) if interpreters else None
        return Internlm2Agent(llm=llm, plugin_executor=plugin_exec, interpreter_executor=interp_exec,
                              protocol=SafeInternlm2Protocol(recorder), max_turn=max_turns)
    actions = plugins + interpreters
    if kind == "react":
        return ReAct(llm=llm, action_executor=SafeExecutor(actions, recorder), protocol=ReActProtocol(),
                     max_turn=max_turns)
    if kind == "rewoo":
        return ReWOO(llm=llm, action_executor=SafeExecutor(actions, recorder),
                     protocol=RecordingReWOOProtocol(recorder), max_turn=max_turns)
    if kind == "autogpt":
        return FixedAutoGPT(llm=llm, action_executor=SafeExecutor(actions, recorder, finish_in_action=True),
                            protocol=FixedAutoGPTProtocol(recorder), max_turn=max_turns)
    raise ValueError(f"unknown agent kind {kind!r}; one of {', '.join(KINDS)}")
