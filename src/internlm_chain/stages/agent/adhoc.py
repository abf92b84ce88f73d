"""`ichain agent run "Q" / chat / bench / tools`: the agent outside a chain run (nothing is recorded).

Settings come from the chain file's `stages.agent` (with the deploy stage's Endpoint from the manifest),
from flags, or both (flags win). The worker runs in the agent runtime with the terminal attached.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from internlm_chain.chain.artifacts import Artifact
from internlm_chain.errors import ChainError, Problem
from internlm_chain.stages.agent import spec as agentspec
from internlm_chain.stages.agent.settings import AgentSettings


@dataclass
class Flags:
    endpoint: str | None = None
    served_name: str | None = None
    api_key_env: str | None = None
    hf_model: str | None = None
    agent: str | None = None
    tools: str | None = None
    allow: str | None = None
    max_turns: int | None = None
    timeout: float | None = None
    python: str | None = None
    extra: dict = field(default_factory=dict)

    def overlay(self) -> dict:
        """The flags as a partial `stages.agent` section."""
        out: dict = {}
        llm = {k: v for k, v in (("url", self.endpoint), ("served_name", self.served_name),
                                 ("api_key_env", self.api_key_env), ("hf_model", self.hf_model)) if v}
        if llm:
            out["llm"] = llm
        if self.agent:
            out["agent"] = self.agent
        if self.tools is not None:
            out["tools"] = [t.strip() for t in self.tools.split(",") if t.strip()]
        if self.allow is not None:
            out["allow"] = [t.strip() for t in self.allow.split(",") if t.strip()]
        if self.max_turns is not None:
            out["max_turns"] = self.max_turns
        if self.timeout is not None:
            out["request_timeout_s"] = self.timeout
        return out

    def flag_of(self, field_path: str) -> str:
        names = {"llm.url": "--endpoint", "llm.served_name": "--served-name", "llm.api_key_env": "--api-key-env",
                 "llm.hf_model": "--hf-model", "agent": "--agent", "max_turns": "--max-turns",
                 "request_timeout_s": "--timeout"}
        if field_path.startswith("tools"):
            return "--tools"
        if field_path.startswith("allow"):
            return "--allow"
        return names.get(field_path, field_path)


@dataclass
class Prepared:
    settings: AgentSettings
    python: list[str]
    base_dir: Path
    endpoint: Artifact | None
    loaded: object | None = None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def prepare(config: Path | None, sets: list[str], flags: Flags) -> Prepared:
    loaded = None
    endpoint = None
    section: dict = {}
    base_dir = Path.cwd()
    if config is not None:
        from internlm_chain.chain.manifest import Manifest
        from internlm_chain.chain.planner import Planner
        from internlm_chain.config.loader import load_chain

        loaded = load_chain(config, sets)
        base_dir = loaded.base_dir
        manifest = Manifest.load(loaded.workdir)
        done = {f"{s}.{k}": a for s, rec in manifest.stages.items() if rec.state == "done"
                for k, a in rec.outputs.items()}
        endpoint = done.get("deploy.endpoint")
        if loaded.config.stages.agent is not None:
            settings = Planner(loaded, done).context("agent").settings
            section = settings.model_dump(mode="json", exclude_unset=True)
    data = _merge(section, flags.overlay())
    try:
        settings = AgentSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            problems.append(Problem(f"{flags.flag_of(path)}: {err['msg']}"))
        raise ChainError(problems) from None
    python = _python(loaded, flags)
    return Prepared(settings, python, base_dir, endpoint, loaded)


def _python(loaded, flags: Flags) -> list[str]:
    if flags.python:
        argv = [flags.python]
    elif loaded is not None:
        from internlm_chain.runtimes.resolve import interpreter_argv

        argv = interpreter_argv(loaded, "agent", "agent", "cpu")
    else:
        from internlm_chain.runtimes.resolve import env_dir

        argv = [str(env_dir("agent") / "bin" / "python")]
    if len(argv) == 1 and not Path(argv[0]).is_file():
        raise ChainError(Problem(f"the agent runtime is not there ({argv[0]} is missing)",
                                 hint="run `ichain env sync agent`, or pass --python /path/to/python"))
    return argv


def check(p: Prepared, need_llm: bool = True) -> dict:
    """Problems → ChainError (exit 2); else the worker spec."""

    def problem(field_: str, message: str, hint: str | None = None) -> Problem:
        if p.loaded is not None:
            return p.loaded.problem(f"stages.agent.{field_}", message, hint)
        return Problem(message, path=field_, hint=hint)

    problems = agentspec.check(p.settings, problem, base_dir=p.base_dir, endpoint=p.endpoint, deploy_coming=False,
                               python=p.python, need_work=False)
    if not need_llm:
        problems = [x for x in problems if not x.path.endswith("llm")]
    if problems:
        raise ChainError(problems)
    choice = agentspec.choose_llm(p.settings, p.endpoint, p.base_dir) or agentspec.LLMChoice()
    return agentspec.build_spec(p.settings, choice, p.base_dir)


def run_worker(p: Prepared, args: list[str], spec: dict | None) -> int:
    """The worker with the terminal attached (stdin too: `chat`); returns its exit code."""
    env = {**os.environ, **agentspec.worker_env()}
    with tempfile.TemporaryDirectory(prefix="ichain-agent-") as tmp:
        argv = [*p.python, "-m", "agentrun", *args]
        if spec is not None:
            spec_file = Path(tmp) / "spec.json"
            spec_file.write_text(agentspec.spec_text(spec), encoding="utf-8")
            argv += ["--spec", str(spec_file)]
        try:
            return subprocess.run(argv, env=env).returncode
        except KeyboardInterrupt:
            return 130
