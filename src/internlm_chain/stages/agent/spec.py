"""Agent settings → checked problems and the JSON spec the `agentrun` worker runs (shared by stage and CLI)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from internlm_chain.chain.artifacts import Artifact
from internlm_chain.errors import Problem
from internlm_chain.stages.agent.settings import AgentSettings
from internlm_chain.workers.agentrun import bench_check, toolspec

WORKERS_DIR = Path(__file__).resolve().parents[2] / "workers"
ProblemFn = Callable[[str, str, str | None], Problem]


@dataclass
class LLMChoice:
    url: str | None = None
    served_name: str | None = None
    api_key_env: str | None = None
    hf_model: str | None = None
    source: str = ""  # what decided it, for messages


def worker_env() -> dict[str, str]:
    return {"PYTHONPATH": str(WORKERS_DIR), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def _abs(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base_dir / p).resolve()


def choose_llm(s: AgentSettings, endpoint: Artifact | None, base_dir: Path) -> LLMChoice | None:
    """hf_model > url > endpoint (a reference) > the deploy stage's Endpoint; None when nothing is set."""
    llm = s.llm
    if llm.hf_model:
        return LLMChoice(hf_model=str(_abs(llm.hf_model, base_dir)), source="llm.hf_model")
    from_endpoint = endpoint if endpoint is not None and getattr(endpoint, "kind", "") == "Endpoint" else None
    if llm.url:
        return LLMChoice(url=llm.url, served_name=llm.served_name, api_key_env=llm.api_key_env, source="llm.url")
    if llm.endpoint or from_endpoint is not None:
        url = llm.endpoint or from_endpoint.path
        same = from_endpoint is not None and from_endpoint.path == url
        return LLMChoice(url=url, served_name=llm.served_name or (from_endpoint.served_name if same else None),
                         api_key_env=llm.api_key_env or (from_endpoint.api_key_env if same else None),
                         source="llm.endpoint" if llm.endpoint else "the deploy stage's endpoint")
    return None


def check(s: AgentSettings, problem: ProblemFn, *, base_dir: Path, endpoint: Artifact | None,
          deploy_coming: bool, python: list[str] | None, need_work: bool) -> list[Problem]:
    """Everything checkable before a run, without running the agent."""
    out: list[Problem] = []
    llm = s.llm
    sources = [n for n, v in (("hf_model", llm.hf_model), ("url", llm.url), ("endpoint", llm.endpoint)) if v]
    if len(sources) > 1:
        out.append(problem("llm", f"set one of llm.{', llm.'.join(sources)}, not several", None))
    choice = choose_llm(s, endpoint, base_dir)
    if choice is None and not deploy_coming:
        out.append(problem("llm", "no model for the agent: the deploy stage is not enabled and no LLM is set",
                           "set llm.url (+ llm.served_name) to an OpenAI-compatible endpoint, llm.hf_model, or "
                           "enable stages.deploy"))
    if llm.url and not llm.url.startswith(("http://", "https://")):
        out.append(problem("llm.url", f"`{llm.url}` is not an http(s) URL", "e.g. http://127.0.0.1:23333/v1"))
    if llm.hf_model and not (_abs(llm.hf_model, base_dir) / "config.json").is_file():
        out.append(problem("llm.hf_model", f"{_abs(llm.hf_model, base_dir)} is not a Hugging Face model folder "
                                           "(no config.json)", None))
    key_env = llm.api_key_env or (choice.api_key_env if choice else None)
    if key_env and key_env not in os.environ:
        out.append(problem("llm.api_key_env", f"environment variable {key_env} is not set", f"export {key_env}=…"))
    if need_work and not s.questions and not s.bench:
        out.append(problem("questions", "the agent stage has nothing to do",
                           "set `questions` (a list of prompts) and/or `bench` (a TASKS.jsonl file)"))
    if s.bench:
        path = _abs(s.bench, base_dir)
        try:
            bench_check.load_tasks(path)
        except bench_check.TaskError as exc:
            out.append(problem("bench", str(exc), None))
    out += check_tools(s, problem, base_dir=base_dir, python=python)
    return out


def check_tools(s: AgentSettings, problem: ProblemFn, *, base_dir: Path, python: list[str] | None) -> list[Problem]:
    out: list[Problem] = []
    named: list[tuple[int, dict]] = []
    for i, entry in enumerate(tool_entries(s)):
        field = f"tools.{i}"
        try:
            spec = toolspec.parse_tool(entry)
        except toolspec.ToolSpecError as exc:
            out.append(problem(field, str(exc), None))
            continue
        if spec["kind"] == "file" and not _abs(spec["path"], base_dir).is_file():
            out.append(problem(field, f"tool file not found: {_abs(spec['path'], base_dir)}", None))
        if not toolspec.allowed(spec, s.allow):
            kind = toolspec.risk(spec)
            out.append(problem(field, f"tool `{spec.get('name', spec['kind'])}` "
                                      f"{'runs code' if kind == 'code' else 'uses the network'} and is not allowed",
                               f"add `{spec.get('name', spec['kind'])}` or `{kind}` to `allow` (--allow on the command line)"))
        if spec["kind"] in ("auto", "agentlego", "lagent"):
            named.append((i, spec))
    catalogue = tool_catalogue(tuple(python)) if named and python else None
    if catalogue is None:
        return out  # runtime not synced (or a container): the worker checks the same at its start
    agentlego = {r["name"]: r for r in catalogue if r["library"] == "agentlego"}
    lagent = {r["name"]: r for r in catalogue if r["library"] == "lagent"}
    for i, spec in named:
        key = toolspec.resolved_key(spec, agentlego, lagent)
        if key is None:
            out.append(problem(f"tools.{i}", f"unknown tool `{spec['name']}`",
                               f"AgentLego tools: {', '.join(sorted(agentlego))}; Lagent actions: "
                               f"{', '.join(sorted(lagent))}; see `ichain agent tools list`"))
            continue
        lib, name = key.split(":")
        row = (agentlego if lib == "agentlego" else lagent)[name]
        if row.get("missing"):
            out.append(problem(f"tools.{i}", f"tool `{name}` cannot run in the agent runtime: {row['missing']}",
                               "install the packages into the agent runtime, or drop the tool"))
    return out


def _catalogue_cache(python: tuple[str, ...]) -> Path | None:
    """Where the tool list of this exact runtime is kept: asking it costs a second of imports, and
    `ichain config validate` should stay fast. The key changes when the runtime is re-synced."""
    from internlm_chain.chain.fingerprint import stable_hash
    from internlm_chain.runtimes.resolve import cache_dir

    exe = Path(python[0])
    marker = exe.parent.parent / ".ichain-runtime.json"
    try:
        stamp = marker.read_text() if marker.exists() else str(exe.stat().st_mtime_ns)
    except OSError:
        return None
    worker = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in (WORKERS_DIR / "agentrun").glob("*.py"))
    return cache_dir() / "tool-catalogues" / (stable_hash([list(python), stamp, worker])[:24] + ".json")


@functools.lru_cache(maxsize=8)
def tool_catalogue(python: tuple[str, ...]) -> list[dict] | None:
    """The runtime's own tool list (names, parameters, missing packages), asked once per runtime sync."""
    if not python or not Path(python[0]).is_file():
        return None
    cached = _catalogue_cache(python)
    if cached is not None and cached.exists():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except ValueError:
            pass
    catalogue = _ask_runtime(python)
    if catalogue is not None and cached is not None:
        from internlm_chain.chain.manifest import write_atomic

        write_atomic(cached, json.dumps(catalogue))
    return catalogue


def _ask_runtime(python: tuple[str, ...]) -> list[dict] | None:
    try:
        res = subprocess.run([*python, "-m", "agentrun", "tools", "list", "--json"], capture_output=True, text=True,
                             timeout=180, env={**os.environ, **worker_env()})
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None


def tool_entries(s: AgentSettings) -> list:
    """Tool entries as the worker reads them: strings and plain mappings."""
    return [t if isinstance(t, str) else t.as_entry() for t in s.tools]


def _abs_tool(entry, base_dir: Path):
    """User-file tools with absolute paths, so the job runs the same from any directory."""
    if isinstance(entry, dict):
        if "name" in entry:
            return {**entry, "name": _abs_tool(entry["name"], base_dir)}
        return dict(entry)
    try:
        spec = toolspec.parse_tool(entry)
    except toolspec.ToolSpecError:
        return entry
    if spec["kind"] == "file":
        return f"{_abs(spec['path'], base_dir)}:{spec['attr']}"
    return entry


def build_spec(s: AgentSettings, choice: LLMChoice, base_dir: Path) -> dict:
    llm = {"url": choice.url, "served_name": choice.served_name, "api_key_env": choice.api_key_env,
           "hf_model": choice.hf_model, "timeout_s": s.request_timeout_s, "retries": s.retries,
           "extra_body": s.llm.extra_body}
    return {
        "agent": s.agent,
        "max_turns": s.max_turns,
        "llm": {k: v for k, v in llm.items() if v not in (None, {})},
        "generation": s.generation.model_dump(mode="json"),
        "tools": [_abs_tool(t, base_dir) for t in tool_entries(s)],
        "allow": list(s.allow),
        "python_tool": s.python_tool.model_dump(mode="json"),
        "questions": list(s.questions),
        "check_timeout_s": min(10.0, s.request_timeout_s),
    }


def spec_text(spec: dict) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
