"""`python -m agentrun run|chat|bench|tools …` inside the agent runtime (see internlm_chain.cli.agent)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EXIT_CONFIG, EXIT_LLM, AgentRunError


def _write_json(path: str, data) -> None:
    """Atomic: a reader never sees half a file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def _load_spec(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AgentRunError(f"cannot read the agent spec {path}: {exc}") from None


def _session(args, live: bool):
    from .runner import Session

    session = Session(_load_spec(args.spec), live=live)
    session.check()
    return session


def _failed_start(args, exc: AgentRunError, empty: dict) -> int:
    """Under --errors-in-output the caller reads the failure from --out (exit 0); else the exit code says it."""
    print(f"agentrun: error: {exc}", file=sys.stderr, flush=True)
    if args.errors_in_output and args.out:
        _write_json(args.out, {**empty, "error": str(exc)})
        return 0
    return exc.exit_code


def cmd_run(args) -> int:
    from .runner import summarize
    from .transcript import render

    try:
        session = _session(args, live=not args.json and not args.quiet)
    except AgentRunError as exc:
        return _failed_start(args, exc, {"transcripts": [], "summary": {}})
    questions = list(args.question or []) or list(session.spec.get("questions") or [])
    if not questions:
        raise AgentRunError("no question: pass one, or set `questions` in the stage")
    transcripts = []
    for q in questions:
        t = session.ask(q)
        transcripts.append(t)
        if not args.json:
            print(render(t), flush=True)
            print(flush=True)
    result = {"transcripts": transcripts, "summary": summarize(transcripts)}
    if args.out:
        _write_json(args.out, result)
    if args.json:
        print(json.dumps(transcripts[0] if len(transcripts) == 1 else result, indent=2, ensure_ascii=False))
    errors = [t["error"] for t in transcripts if t["stop_reason"] == "error"]
    if errors:
        print(f"agentrun: error: {errors[0]}", file=sys.stderr)
        return 0 if args.errors_in_output and args.out else EXIT_LLM
    return 0


def cmd_chat(args) -> int:
    from .transcript import render

    session = _session(args, live=True)
    history: list[dict] = []
    print("Chat with the agent; an empty line or Ctrl-D ends it.", flush=True)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line or line in ("/exit", "/quit"):
            return 0
        t = session.ask(line, history)
        print(render(t), flush=True)
        if t["final_answer"] is not None:
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": t["final_answer"]}]


def cmd_bench(args) -> int:
    from .bench_check import TaskError, load_tasks
    from .runner import run_bench

    try:
        tasks = load_tasks(args.tasks)
    except TaskError as exc:
        print(f"agentrun: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        session = _session(args, live=not args.json)
    except AgentRunError as exc:
        return _failed_start(args, exc, {"tasks": [], "metrics": {}})
    result = run_bench(session, tasks)
    if args.out:
        _write_json(args.out, result)
    m = result["metrics"]
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        validity = "n/a" if m["tool_call_validity"] is None else f"{m['tool_call_validity']:.0%}"
        print(f"success {m['success_rate']:.0%} of {m['tasks']} tasks · tool-call validity {validity} · "
              f"mean steps {m['mean_steps']:.1f} · mean latency {m['mean_latency_s']:.2f}s")
    errors = [r["error"] for r in result["tasks"] if r["stop_reason"] == "error"]
    if errors:
        print(f"agentrun: error: {len(errors)} task(s) failed: {errors[0]}", file=sys.stderr)
        return 0 if args.errors_in_output and args.out else EXIT_LLM
    return 0


def cmd_tools_list(args) -> int:
    from .tools import agentlego_registry, lagent_registry, missing_requirements
    from .toolspec import risk

    rows = []
    for name, cls in sorted(agentlego_registry().items()):
        meta = cls.get_default_toolmeta() if hasattr(cls, "get_default_toolmeta") else None
        params = [{"name": p.name, "type": getattr(p.type, "__name__", str(p.type)), "description": p.description or "",
                   "required": not p.optional} for p in (meta.inputs if meta else ())]
        rows.append({"name": name, "library": "agentlego", "description": (meta.description if meta else "") or "",
                     "parameters": params, "missing": missing_requirements(cls),
                     "needs_allow": risk({"kind": "agentlego", "name": name})})
    for name, cls in sorted(lagent_registry().items()):
        desc = getattr(cls, "__tool_description__", None) or {}
        apis = desc.get("api_list") or [desc]
        params = [{"name": p.get("name"), "type": p.get("type"), "description": p.get("description", ""),
                   "required": p.get("name") in api.get("required", [])} for api in apis for p in api.get("parameters", [])]
        rows.append({"name": name, "library": "lagent", "description": (desc.get("description") or "").split("\n")[0],
                     "parameters": params, "missing": None, "needs_allow": risk({"kind": "lagent", "name": name})})
    rows.append({"name": "python", "library": "internlm-chain", "description": "Python code in a subprocess with "
                 "time and memory limits", "parameters": [{"name": "command", "type": "STRING",
                 "description": "Python source code", "required": True}], "missing": None, "needs_allow": "code"})
    if args.spec:  # also the chain's own tools: user files and remote servers, loaded for real
        from .runner import Session

        session = Session(_load_spec(args.spec))
        known = {r["name"] for r in rows}
        from .tools import parameters_of

        for action in session.plugins + session.interpreters:
            if action.name not in known:
                desc = action.description
                rows.append({"name": action.name, "library": "chain", "description": desc.get("description", ""),
                             "parameters": parameters_of(action), "missing": None, "needs_allow": None})
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        flag = " (unavailable: missing packages)" if r["missing"] else (f" (needs allow: {r['needs_allow']})"
                                                                        if r["needs_allow"] else "")
        params = ", ".join(f"{p['name']}{'' if p['required'] else '?'}: {p['type']}" for p in r["parameters"])
        print(f"{r['library']:>14}  {r['name']}({params}){flag}")
        if r["description"]:
            print(f"{'':>16}{' '.join(str(r['description']).split())[:150]}")
    return 0


def cmd_tools_serve(args) -> int:
    import shutil

    exe = shutil.which("agentlego-server", path=str(Path(sys.executable).parent)) or shutil.which("agentlego-server")
    if not exe:
        raise AgentRunError("agentlego-server is not installed in the agent runtime (AgentLego's `server` extra)")
    argv = [exe, "start", *args.tools, "--host", args.host, "--port", str(args.port), "--device", args.device]
    for extra in args.extra or []:
        argv += ["--extra", extra]
    if not args.setup:
        argv.append("--no-setup")
    print("agentrun: " + " ".join(argv), file=sys.stderr, flush=True)
    os.execv(exe, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentrun", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="answer questions; print each step")
    p.add_argument("--spec", required=True)
    p.add_argument("--question", "-q", action="append")
    p.add_argument("--out")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--errors-in-output", action="store_true", help="record failures in --out and exit 0")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("chat", help="interactive; keeps history")
    p.add_argument("--spec", required=True)
    p.set_defaults(fn=cmd_chat)
    p = sub.add_parser("bench", help="run TASKS.jsonl; report success rate, validity, steps, latency")
    p.add_argument("--spec", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--out")
    p.add_argument("--json", action="store_true")
    p.add_argument("--errors-in-output", action="store_true", help="record failures in --out and exit 0")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("tools", help="list or serve tools")
    tsub = p.add_subparsers(dest="tools_cmd", required=True)
    t = tsub.add_parser("list")
    t.add_argument("--spec")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_tools_list)
    t = tsub.add_parser("serve")
    t.add_argument("tools", nargs="+")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=16180)
    t.add_argument("--device", default="cpu")
    t.add_argument("--extra", action="append")
    t.add_argument("--no-setup", dest="setup", action="store_false")
    t.set_defaults(fn=cmd_tools_serve)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except AgentRunError as exc:
        print(f"agentrun: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
