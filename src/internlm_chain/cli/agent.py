"""`ichain agent`: run the agent stage, or talk to an agent directly (run "Q", chat, bench, tools).

Import-light: Lagent and AgentLego only ever load inside the agent runtime's own process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from internlm_chain.cli.common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    QuietOpt,
    SetOpt,
    ShowFilesOpt,
    stage_verb,
)

app = typer.Typer(help="Run Lagent agents with AgentLego tools.", no_args_is_help=True)
tools_app = typer.Typer(help="List the tools an agent can use, or serve them over HTTP.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")

EndpointOpt = typer.Option(None, "--endpoint", help="OpenAI-compatible URL: http://host:port, …/v1 or the full "
                                                    "…/v1/chat/completions URL.")
ServedNameOpt = typer.Option(None, "--served-name", help="Model name to send (the server's served name).")
ApiKeyEnvOpt = typer.Option(None, "--api-key-env", help="Environment variable that holds the API key.")
HfModelOpt = typer.Option(None, "--hf-model", help="Local Hugging Face model folder, loaded in-process instead.")
AgentOpt = typer.Option(None, "--agent", help="react, rewoo, autogpt or internlm2.")
ToolsOpt = typer.Option(None, "--tools", help="Comma-separated: Calculator, lagent:ArxivSearch, file.py:Class, "
                                              "http://tool-server, python.")
AllowOpt = typer.Option(None, "--allow", help="Comma-separated opt-ins for code/network tools (e.g. python).")
MaxTurnsOpt = typer.Option(None, "--max-turns", help="Most model turns per question.")
TimeoutOpt = typer.Option(None, "--timeout", help="Seconds per model request.")
PythonOpt = typer.Option(None, "--python", help="The agent runtime's interpreter (default: the synced runtime).")


def _flags(endpoint, served_name, api_key_env, hf_model, agent, tools, allow, max_turns, timeout, python):
    from internlm_chain.stages.agent.adhoc import Flags

    return Flags(endpoint=endpoint, served_name=served_name, api_key_env=api_key_env, hf_model=hf_model,
                 agent=agent, tools=tools, allow=allow, max_turns=max_turns, timeout=timeout, python=python)


def _finish(code: int) -> None:
    if code:
        raise typer.Exit(code)


@app.command("run")
def run(
    question: str = typer.Argument(None, help="Ask this (prints each step); without it, run the chain's stage."),
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    show_files: bool = ShowFilesOpt,
    quiet: bool = QuietOpt,
    endpoint: str = EndpointOpt,
    served_name: str = ServedNameOpt,
    api_key_env: str = ApiKeyEnvOpt,
    hf_model: str = HfModelOpt,
    agent: str = AgentOpt,
    tools: str = ToolsOpt,
    allow: str = AllowOpt,
    max_turns: int = MaxTurnsOpt,
    timeout: float = TimeoutOpt,
    python: str = PythonOpt,
) -> None:
    """Answer QUESTION with an agent, or (no QUESTION, -c FILE) run the chain's agent stage."""
    flags = _flags(endpoint, served_name, api_key_env, hf_model, agent, tools, allow, max_turns, timeout, python)
    if question is None:
        if flags.overlay() or python:
            from internlm_chain.errors import ChainError

            raise ChainError("agent flags (--endpoint, --tools, …) need a QUESTION; the stage takes its settings "
                             "from the chain file")
        stage_verb("agent", config, sets, dry_run, as_json, show_files, quiet=quiet)
        return
    from internlm_chain.stages.agent.adhoc import check, prepare, run_worker

    prepared = prepare(config, sets or [], flags)
    spec = check(prepared)
    args = ["run", "--question", question] + (["--json"] if as_json else []) + (["--quiet"] if quiet else [])
    _finish(run_worker(prepared, args, spec))


@app.command("chat")
def chat(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    endpoint: str = EndpointOpt,
    served_name: str = ServedNameOpt,
    api_key_env: str = ApiKeyEnvOpt,
    hf_model: str = HfModelOpt,
    agent: str = AgentOpt,
    tools: str = ToolsOpt,
    allow: str = AllowOpt,
    max_turns: int = MaxTurnsOpt,
    timeout: float = TimeoutOpt,
    python: str = PythonOpt,
) -> None:
    """Talk to an agent; it keeps the conversation's history. An empty line ends it."""
    from internlm_chain.stages.agent.adhoc import check, prepare, run_worker

    flags = _flags(endpoint, served_name, api_key_env, hf_model, agent, tools, allow, max_turns, timeout, python)
    prepared = prepare(config, sets or [], flags)
    _finish(run_worker(prepared, ["chat"], check(prepared)))


@app.command("bench")
def bench(
    tasks: Path = typer.Argument(..., help="TASKS.jsonl: {question, answer | check: {contains|regex|python}}."),
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    as_json: bool = JsonOpt,
    out: Path = typer.Option(None, "--out", help="Also write the full results (with transcripts) here."),
    endpoint: str = EndpointOpt,
    served_name: str = ServedNameOpt,
    api_key_env: str = ApiKeyEnvOpt,
    hf_model: str = HfModelOpt,
    agent: str = AgentOpt,
    tools: str = ToolsOpt,
    allow: str = AllowOpt,
    max_turns: int = MaxTurnsOpt,
    timeout: float = TimeoutOpt,
    python: str = PythonOpt,
) -> None:
    """Benchmark an agent: success rate, tool-call validity, steps and latency per task."""
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.stages.agent.adhoc import check, prepare, run_worker
    from internlm_chain.workers.agentrun.bench_check import TaskError, load_tasks

    try:
        load_tasks(tasks)
    except TaskError as exc:
        raise ChainError(Problem(str(exc))) from None
    flags = _flags(endpoint, served_name, api_key_env, hf_model, agent, tools, allow, max_turns, timeout, python)
    prepared = prepare(config, sets or [], flags)
    spec = check(prepared)
    args = ["bench", "--tasks", str(tasks.resolve())] + (["--json"] if as_json else [])
    if out:
        args += ["--out", str(out.resolve())]
    _finish(run_worker(prepared, args, spec))


@tools_app.command("list")
def tools_list(
    config: Path = ConfigOpt,
    sets: list[str] = SetOpt,
    as_json: bool = JsonOpt,
    python: str = PythonOpt,
) -> None:
    """Every tool the agent runtime offers, with parameters (and the chain's own tools with -c)."""
    from internlm_chain.stages.agent.adhoc import Flags, check, prepare, run_worker

    prepared = prepare(config, sets or [], Flags(python=python))
    spec = check(prepared, need_llm=False) if config is not None else None
    args = ["tools", "list"] + (["--json"] if as_json else [])
    _finish(run_worker(prepared, args, spec))


@tools_app.command("serve")
def tools_serve(
    tools: list[str] = typer.Argument(..., help="AgentLego tool class names, e.g. Calculator."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the tools to the network."),
    port: int = typer.Option(16180, "--port", min=1, max=65535),
    device: str = typer.Option("cpu", "--device", help="Device the tools' models load on (cpu, cuda:0)."),
    extra: list[Path] = typer.Option(None, "--extra", help="Python file(s) defining more tools."),
    setup: bool = typer.Option(True, "--setup/--no-setup", help="Load the tools' models at start."),
    python: str = PythonOpt,
) -> None:
    """Serve tools over HTTP with AgentLego's tool server (agents use them via a tool-server URL)."""
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.stages.agent.adhoc import Flags, prepare, run_worker

    for path in extra or []:
        if not path.is_file():
            raise ChainError(Problem(f"--extra: {path} is not a file"))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving tools on {host}: anyone who can reach this address can call them",
              file=sys.stderr)
    prepared = prepare(None, [], Flags(python=python))
    args = ["tools", "serve", *tools, "--host", host, "--port", str(port), "--device", device]
    for path in extra or []:
        args += ["--extra", str(path.resolve())]
    if not setup:
        args.append("--no-setup")
    _finish(run_worker(prepared, args, None))
