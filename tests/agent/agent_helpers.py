"""Run the real `agentrun` worker in the agent runtime against scripted servers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "src" / "internlm_chain" / "workers"
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.scripted_openai import Reply, ScriptedOpenAI  # noqa: E402

__all__ = ["Reply", "ScriptedOpenAI", "agentrun", "free_port", "react_call", "last_number", "ichain"]


def agentrun(python: Path, spec: dict, *args: str, tmp: Path, stdin: str | None = None,
             timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict | None]:
    """`python -m agentrun ARGS --spec SPEC --out OUT`; returns the process and the --out JSON (if any)."""
    spec_file = tmp / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    out = tmp / f"out-{time.monotonic_ns()}.json"
    argv = [str(python), "-m", "agentrun", *args, "--spec", str(spec_file)]
    if args and args[0] in ("run", "bench"):
        argv += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(WORKERS), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, input=stdin, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() else None
    return proc, data


def spec_for(server: ScriptedOpenAI, agent: str = "react", tools: list | None = None, **extra) -> dict:
    spec = {"agent": agent, "llm": {"url": server.base_url, "served_name": server.model, "timeout_s": 10,
                                    "retries": 1}, "tools": ["Calculator"] if tools is None else tools,
            "max_turns": 4}
    spec.update(extra)
    return spec


def react_call(tool: str, args: dict | str, thought: str = "I should use a tool.") -> str:
    text = args if isinstance(args, str) else json.dumps(args)
    # a model that goes on to invent the result: our stop words must cut it
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {text}\nResponse: 999999 (invented)"


def last_number(text: str) -> str | None:
    found = re.findall(r"-?\d+(?:\.\d+)?", text)
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ichain(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 180, input: str | None = None):
    return subprocess.run([sys.executable, "-m", "internlm_chain", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout, input=input)
