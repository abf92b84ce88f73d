"""One spec (the agent stage's settings as JSON) → a ready agent; questions → transcripts; tasks → metrics."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from .agents import KINDS, PROTOCOL_STOP_WORDS, build_agent
from .bench_check import passes
from .errors import AgentRunError, SpecError
from .llm import OpenAIChat, check_endpoint
from .tools import load_tools
from .transcript import Recorder, build


class Session:
    """An agent ready to answer: model client, tools and Lagent agent, rebuilt per question."""

    def __init__(self, spec: dict, live: bool = False):
        self.spec = spec
        self.kind = spec.get("agent", "react")
        if self.kind not in KINDS:
            raise SpecError(f"unknown agent kind {self.kind!r}; one of {', '.join(KINDS)}")
        self.max_turns = int(spec.get("max_turns", 4))
        self.live = live
        llm = spec.get("llm") or {}
        self.llm_spec = llm
        gen = spec.get("generation") or {}
        stop = list(dict.fromkeys([*PROTOCOL_STOP_WORDS[self.kind], *(gen.get("stop_words") or [])]))
        self.gen = dict(max_new_tokens=int(gen.get("max_new_tokens", 512)),
                        temperature=float(gen.get("temperature", 0.0)), top_p=float(gen.get("top_p", 1.0)),
                        stop_words=stop)
        self.plugins, self.interpreters = load_tools(
            spec.get("tools") or [], allow=list(spec.get("allow") or []),
            base_dir=Path(spec.get("base_dir") or "."), python_limits=dict(spec.get("python_tool") or {}),
            remote_timeout_s=float(spec.get("check_timeout_s", 10)))
        self._hf = None

    def check(self) -> None:
        """Bounded-time reachability check of the endpoint, before any question runs."""
        llm = self.llm_spec
        if not llm.get("url") and not llm.get("hf_model"):
            raise SpecError("no LLM: set llm.url (an OpenAI-compatible endpoint) or llm.hf_model")
        if not llm.get("url"):
            return
        import os

        key = os.environ.get(llm["api_key_env"]) if llm.get("api_key_env") else None
        timeout = min(float(self.spec.get("check_timeout_s", 10)), float(llm.get("timeout_s", 60)))
        names = check_endpoint(llm["url"], llm.get("served_name", ""), key, timeout)
        if names and llm.get("served_name") and llm["served_name"] not in names:
            print(f"agentrun: warning: {llm['url']} lists models {', '.join(names)}, not "
                  f"{llm['served_name']!r}; the server may refuse it", file=sys.stderr)

    def model(self, recorder: Recorder):
        llm = self.llm_spec
        if llm.get("hf_model"):
            from lagent.llms import INTERNLM2_META

            from .hf import load_hf_model

            if self._hf is None:
                self._hf = load_hf_model(llm["hf_model"], meta_template=INTERNLM2_META, recorder=recorder,
                                         **self.gen)
            self._hf.recorder = recorder
            return self._hf
        extra = {"skip_special_tokens": False} if self.kind == "internlm2" else {}
        extra.update(llm.get("extra_body") or {})
        return OpenAIChat(llm["url"], llm.get("served_name") or "", api_key_env=llm.get("api_key_env"),
                          timeout_s=float(llm.get("timeout_s", 60)), retries=int(llm.get("retries", 2)),
                          extra_body=extra, recorder=recorder, **self.gen)

    def meta(self) -> dict:
        llm = self.llm_spec
        return {"agent": self.kind, "model": llm.get("served_name") or llm.get("hf_model"),
                "url": llm.get("url"), "max_turns": self.max_turns,
                "tools": [a.name for a in self.plugins + self.interpreters]}

    def ask(self, question: str, history: list[dict] | None = None) -> dict:
        recorder = Recorder(live=self.live)
        started = time.monotonic()
        answer, error, stop = None, None, "answer"
        try:
            agent = build_agent(self.kind, self.model(recorder), self.plugins, self.interpreters, recorder,
                                self.max_turns)
            message = [*history, {"role": "user", "content": question}] if history else question
            if history and self.kind == "rewoo":
                message = "\n".join(f"{m['role']}: {m['content']}" for m in message)
            result = agent.chat(message)
            if self.kind == "rewoo":
                recorder.finished = True
            if recorder.finished:
                answer = (result.response or "").strip()
            else:
                stop = "turn_limit"
        except AgentRunError as exc:
            stop, error = "error", str(exc)
        except Exception as exc:  # a Lagent bug must not lose the transcript; the log keeps the traceback
            import traceback

            traceback.print_exc(file=sys.stderr)
            stop, error = "error", f"the agent failed: {type(exc).__name__}: {exc}"
        recorder.fill_thoughts()
        return build(question, recorder, answer=answer, stop_reason=stop, error=error, started=started,
                     meta=self.meta())


def summarize(transcripts: list[dict]) -> dict:
    n = len(transcripts)
    tool_calls = sum(t["tool_calls"] for t in transcripts)
    return {
        "questions": n,
        "answered": sum(1 for t in transcripts if t["stop_reason"] == "answer"),
        "turn_limit": sum(1 for t in transcripts if t["stop_reason"] == "turn_limit"),
        "errors": sum(1 for t in transcripts if t["stop_reason"] == "error"),
        "tool_calls": tool_calls,
        "tool_call_validity": round(sum(t["valid_tool_calls"] for t in transcripts) / tool_calls, 4)
        if tool_calls else None,
        "mean_latency_s": round(statistics.fmean(t["elapsed_s"] for t in transcripts), 4) if n else None,
    }


def run_bench(session: Session, tasks: list[dict]) -> dict:
    rows = []
    for task in tasks:
        t = session.ask(task["question"])
        ok, why = passes(task, t["final_answer"], t)
        used = [e["name"] for e in t["steps"] if e["type"] == "tool"]
        expected_tools = task.get("tools") or []
        if ok and expected_tools and not set(expected_tools) <= set(used):
            ok, why = False, f"did not call {', '.join(sorted(set(expected_tools) - set(used)))}"
        rows.append({"id": task["id"], "question": task["question"], "success": ok, "why": why,
                     "final_answer": t["final_answer"], "stop_reason": t["stop_reason"], "error": t["error"],
                     "steps": t["tool_calls"], "llm_calls": t["llm_calls"], "tool_calls": t["tool_calls"],
                     "valid_tool_calls": t["valid_tool_calls"], "latency_s": t["elapsed_s"], "transcript": t})
        if session.live:
            mark = "ok  " if ok else "FAIL"
            print(f"{mark} {task['id']}: {t['tool_calls']} tool calls, {t['elapsed_s']:.2f}s — {why}", flush=True)
    n = len(rows)
    tool_calls = sum(r["tool_calls"] for r in rows)
    metrics = {
        "tasks": n,
        "success_rate": round(sum(r["success"] for r in rows) / n, 4),
        "tool_call_validity": round(sum(r["valid_tool_calls"] for r in rows) / tool_calls, 4) if tool_calls else None,
        "mean_steps": round(statistics.fmean(r["steps"] for r in rows), 4),
        "mean_latency_s": round(statistics.fmean(r["latency_s"] for r in rows), 4),
        "max_latency_s": round(max(r["latency_s"] for r in rows), 4),
        "errors": sum(1 for r in rows if r["stop_reason"] == "error"),
    }
    return {"metrics": metrics, "tasks": rows}
