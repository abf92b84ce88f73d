"""`ichain agent`: run the agent stage, or talk to an agent directly (run "Q", chat, bench, tools).

Import-light: Lagent and AgentLego only ever load inside the agent runtime's own process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from internlm_chain.cli.common import (
    ConfigFile,
    Json,
    Quiet,
    Sets,
    StageRun,
    option_group,
    stage_run_options,
    stage_verb,
)

app = typer.Typer(help="Run Lagent agents with AgentLego tools.", no_args_is_help=True)
tools_app = typer.Typer(help="List the tools an agent can use, or serve them over HTTP.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")

AgentPython = Annotated[str, typer.Option("--python", help="The agent runtime's interpreter (default: the synced "
                                                           "runtime).")]


def agent_options(
    endpoint: Annotated[str, typer.Option("--endpoint", help="OpenAI-compatible URL: http://host:port, …/v1 or the "
                                                             "full …/v1/chat/completions URL.")] = None,
    served_name: Annotated[str, typer.Option("--served-name", help="Model name to send (the server's served "
                                                                   "name).")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable that holds the API "
                                                                   "key.")] = None,
    hf_model: Annotated[str, typer.Option("--hf-model", help="Local Hugging Face model folder, loaded in-process "
                                                             "instead.")] = None,
    agent: Annotated[str, typer.Option("--agent", help="react, rewoo, autogpt or internlm2.")] = None,
    tools: Annotated[str, typer.Option("--tools", help="Comma-separated: Calculator, lagent:ArxivSearch, "
                                                       "file.py:Class, http://tool-server, python.")] = None,
    allow: Annotated[str, typer.Option("--allow", help="Comma-separated opt-ins for code/network tools (e.g. "
                                                       "python).")] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", help="Most model turns per question.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per model request.")] = None,
    python: AgentPython = None,
):
    """The flags that say which model, agent and tools `run`, `chat` and `bench` use, as one `Flags`."""
    from internlm_chain.stages.agent.adhoc import Flags

    return Flags(endpoint=endpoint, served_name=served_name, api_key_env=api_key_env, hf_model=hf_model,
                 agent=agent, tools=tools, allow=allow, max_turns=max_turns, timeout=timeout, python=python)


def _run_worker(args: list[str], config: Path | None, sets: list[str] | None, flags, *, check: bool = True,
                need_llm: bool = True) -> None:
    """Run the agent runtime's worker with ARGS (after checking the settings), exiting with its code."""
    from internlm_chain.stages.agent import adhoc

    prepared = adhoc.prepare(config, sets or [], flags)
    spec = adhoc.check(prepared, need_llm=need_llm) if check else None
    code = adhoc.run_worker(prepared, args, spec)
    if code:
        raise typer.Exit(code)


@app.command("run")
@option_group("opts", stage_run_options)
@option_group("flags", agent_options)
def run(
    question: str = typer.Argument(None, help="Ask this (prints each step); without it, run the chain's stage."),
    opts: StageRun = None,
    quiet: Quiet = False,
    flags=None,
) -> None:
    """Answer QUESTION with an agent, or (no QUESTION, -c FILE) run the chain's agent stage."""
    if question is None:
        if flags.overlay() or flags.python:
            from internlm_chain.errors import ChainError

            raise ChainError("agent flags (--endpoint, --tools, …) need a QUESTION; the stage takes its settings "
                             "from the chain file")
        stage_verb("agent", opts, quiet=quiet)
        return
    args = ["run", "--question", question] + (["--json"] if opts.as_json else []) + (["--quiet"] if quiet else [])
    _run_worker(args, opts.config, opts.sets, flags)


@app.command("chat")
@option_group("flags", agent_options)
def chat(config: ConfigFile = None, sets: Sets = None, flags=None) -> None:
    """Talk to an agent; it keeps the conversation's history. An empty line ends it."""
    _run_worker(["chat"], config, sets, flags)


@app.command("bench")
@option_group("flags", agent_options)
def bench(
    tasks: Path = typer.Argument(..., help="TASKS.jsonl: {question, answer | check: {contains|regex|python}}."),
    config: ConfigFile = None,
    sets: Sets = None,
    as_json: Json = False,
    out: Path = typer.Option(None, "--out", help="Also write the full results (with transcripts) here."),
    flags=None,
) -> None:
    """Benchmark an agent: success rate, tool-call validity, steps and latency per task."""
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.workers.agentrun.bench_check import TaskError, load_tasks

    try:
        load_tasks(tasks)
    except TaskError as exc:
        raise ChainError(Problem(str(exc))) from None
    args = ["bench", "--tasks", str(tasks.resolve())] + (["--json"] if as_json else [])
    if out:
        args += ["--out", str(out.resolve())]
    _run_worker(args, config, sets, flags)


@tools_app.command("list")
def tools_list(config: ConfigFile = None, sets: Sets = None, as_json: Json = False, python: AgentPython = None) -> None:
    """Every tool the agent runtime offers, with parameters (and the chain's own tools with -c)."""
    from internlm_chain.stages.agent.adhoc import Flags

    args = ["tools", "list"] + (["--json"] if as_json else [])
    _run_worker(args, config, sets, Flags(python=python), check=config is not None, need_llm=False)


@tools_app.command("serve")
def tools_serve(
    tools: list[str] = typer.Argument(..., help="AgentLego tool class names, e.g. Calculator."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the tools to the network."),
    port: int = typer.Option(16180, "--port", min=1, max=65535),
    device: str = typer.Option("cpu", "--device", help="Device the tools' models load on (cpu, cuda:0)."),
    extra: list[Path] = typer.Option(None, "--extra", help="Python file(s) defining more tools."),
    setup: bool = typer.Option(True, "--setup/--no-setup", help="Load the tools' models at start."),
    python: AgentPython = None,
) -> None:
    """Serve tools over HTTP with AgentLego's tool server (agents use them via a tool-server URL)."""
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.stages.agent.adhoc import Flags

    for path in extra or []:
        if not path.is_file():
            raise ChainError(Problem(f"--extra: {path} is not a file"))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving tools on {host}: anyone who can reach this address can call them",
              file=sys.stderr)
    args = ["tools", "serve", *tools, "--host", host, "--port", str(port), "--device", device]
    for path in extra or []:
        args += ["--extra", str(path.resolve())]
    if not setup:
        args.append("--no-setup")
    _run_worker(args, None, None, Flags(python=python), check=False)
