"""`ichain deploy`: serve / status / stop / chat / quantize."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import (
    ConfigFile,
    DryRun,
    Json,
    Sets,
    StageRun,
    option_group,
    run_stage,
    stage_run_options,
)

app = typer.Typer(help="Serve models with LMDeploy (a CPU stand-in without a GPU).", no_args_is_help=True)

FLAG_CHAIN = "ichain-deploy"  # the chain used when only flags are given (workdir ./runs/ichain-deploy)


def _flag_sets(**fields) -> list[str]:
    """Each flag as an override of `stages.deploy` whose errors name the flag (`quantize.calib_data` is
    --calib-data)."""
    from internlm_chain.config.merge import FlagOverride

    return [FlagOverride(f"stages.deploy.{k}={v}", "--" + k.rsplit(".", 1)[-1].replace("_", "-"))
            for k, v in fields.items() if v is not None]


def _load(config: Path | None, sets: list[str], model: str | None = None):
    """The chain file, or — with flags only — a one-stage chain in ./runs/ichain-deploy."""
    from internlm_chain.config.loader import chain_from_document, load_chain
    from internlm_chain.config.merge import apply_override
    from internlm_chain.config.source import Located, Location
    from internlm_chain.errors import ChainError, Problem

    if config is not None:
        return load_chain(config, sets)
    if model is None:
        raise ChainError(Problem("give a chain file (-c FILE) or a model (--model PATH)"))
    workdir = (Path.cwd() / "runs" / FLAG_CHAIN).resolve()
    doc = Located({"name": FLAG_CHAIN, "workdir": str(workdir), "model": {"path": str(Path(model).expanduser())},
                   "stages": {"deploy": {}}},
                  {(): Location("ichain deploy"), ("model", "path"): Location("--model")})
    for text in sets:
        apply_override(doc, text)
    # errors then name the flag, not a scratch file; relative paths resolve from the current directory
    return chain_from_document(doc, Path.cwd() / "ichain-deploy-flags.yaml")


def _workdir(config: Path | None) -> Path:
    if config is None:
        return (Path.cwd() / "runs" / FLAG_CHAIN).resolve()
    from internlm_chain.config.loader import load_chain

    return load_chain(config).workdir


@app.command("serve")
@option_group("opts", stage_run_options)
def serve(
    opts: StageRun = None,
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the server."),
    model: str = typer.Option(None, "--model", help="Model directory (instead of, or over, the chain's)."),
    backend: str = typer.Option(None, "--backend", help="auto | turbomind | pytorch | transformers"),
    tp: int = typer.Option(None, "--tp", help="Tensor-parallel GPUs."),
    port: int = typer.Option(None, "--port", help="Port to listen on."),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    served_name: str = typer.Option(None, "--served-name", help="Model name clients send."),
    adapter: str = typer.Option(None, "--adapter", metavar="DIR",
                                help="LoRA adapter (PEFT folder) served on top of the model (LMDeploy pytorch "
                                     "engine; GPU)."),
) -> None:
    """Start the server in the background, wait until it serves, record its endpoint."""
    flags = _flag_sets(model=model if opts.config is not None else None, backend=backend, tp=tp, port=port,
                       host=host, served_name=served_name,
                       # a path on the command line means one from the current directory, not the chain's
                       adapter=str(Path(adapter).expanduser().resolve()) if adapter else None)
    loaded = _load(opts.config, [*opts.sets, *flags], model)
    if foreground and not opts.dry_run:
        _serve_foreground(loaded)
        return
    run_stage(loaded, "deploy", opts)


def _serve_foreground(loaded) -> None:
    from internlm_chain.chain.planner import Planner
    from internlm_chain.errors import ChainError, StageFailed
    from internlm_chain.launch.local import run_process
    from internlm_chain.stages.registry import get_stage

    stage = get_stage("deploy")
    ctx = Planner(loaded).context("deploy")
    problems = stage.validate(ctx)
    if problems:
        raise ChainError(problems)
    job = stage.serve_job(ctx, mode="foreground")
    result = run_process(job.model_copy(update={"log": str(Path(job.cwd) / "foreground.log")}))
    if result.state == "failed":
        from internlm_chain.errors import Problem

        raise StageFailed(Problem(f"the server exited with code {result.returncode}", hint=f"log: {result.log}"))


@app.command("status")
def status(
    config: ConfigFile = None,
    as_json: Json = False,
    lines: int = typer.Option(20, "--lines", help="Log lines to show for a dead server."),
) -> None:
    """Is the deployment up, starting or dead? (exit 0 only when up)"""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.stages.deploy import service

    wd = _workdir(config)
    key_env = _key_env(config)
    st = service.status(service.services_dir(wd), key_env)
    if as_json:
        data = st.to_dict()
        if st.state == "dead":
            data["log_tail"] = {s.name: service.log_tail(s.log, lines) for s in st.services if s.state == "dead"}
        print_json(data)
    elif st.state == "none":
        out.print(f"no deployment recorded in {wd}", markup=False)
    else:
        out.print(f"{st.state}: {st.endpoint} (model name: {st.served_name}; backend: {st.backend})", markup=False)
        for s in st.services:
            out.print(f"  {s.name}: {s.state} (pid {s.pid}, {s.url}) log: {s.log}", markup=False)
            if s.state == "dead" and st.state == "dead":
                out.print(f"  ---- last {lines} lines of {s.log} ----", markup=False)
                out.print(service.log_tail(s.log, lines), markup=False)
    import sys

    sys.exit(0 if st.state == "up" else 1)


def _key_env(config: Path | None) -> str | None:
    if config is None:
        return None
    from internlm_chain.config.loader import load_chain

    section = load_chain(config).config.stages.deploy
    return section.api_key_env if section else None


@app.command("stop")
def stop(config: ConfigFile = None) -> None:
    """Stop the recorded server (SIGTERM to its process group, then SIGKILL). Safe to repeat."""
    from internlm_chain.cli.output import out
    from internlm_chain.stages.deploy import service

    pids = service.stop(service.services_dir(_workdir(config)))
    if pids:
        out.print(f"stopped {len(pids)} process group(s): {', '.join(map(str, pids))}", markup=False)
    else:
        out.print("nothing running", markup=False)


def _endpoint(config: Path | None, url: str | None, served_name: str | None) -> tuple[str, str, str | None]:
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.stages.deploy import service

    if url:
        return url.rstrip("/"), served_name or "", None
    wd = _workdir(config)
    states = service.state_files(service.services_dir(wd))
    state = service.read_state(states[0]) if states else None
    if not state:
        raise ChainError(Problem(f"no deployment recorded in {wd}",
                                 hint="start one with `ichain deploy serve`, or pass --url and --served-name"))
    return state["endpoint"], served_name or state.get("served_name") or "", _key_env(config)


@app.command("chat")
def chat(
    config: ConfigFile = None,
    url: str = typer.Option(None, "--url", help="Endpoint URL instead of the recorded deployment."),
    served_name: str = typer.Option(None, "--served-name", help="Model name to send."),
    message: list[str] = typer.Option(None, "--message", "-m", help="Send these messages and exit (repeatable)."),
    system: str = typer.Option(None, "--system", help="System prompt."),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    no_stream: bool = typer.Option(False, "--no-stream", help="Wait for whole replies instead of streaming."),
) -> None:
    """Chat with the endpoint in the terminal (streams replies, keeps the conversation)."""
    import sys

    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.stages.deploy import client, service

    base, name, key_env = _endpoint(config, url, served_name)
    key = service.api_key(key_env)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    scripted = list(message or [])
    interactive = not scripted
    if interactive:
        sys.stderr.write(f"chatting with {name or 'the model'} at {base} (Ctrl-D to quit, /reset to clear)\n")
    while True:
        if scripted:
            text = scripted.pop(0)
        elif interactive:
            try:
                text = input("you> ")
            except EOFError:
                sys.stderr.write("\n")
                return
        else:
            return
        if text.strip() == "/reset":
            history = history[:1] if system else []
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        try:
            if no_stream:
                reply = client.chat(base, name, history, max_tokens=max_tokens, api_key=key)
                sys.stdout.write(reply.text + "\n")
            else:
                reply = None
                for part in client.stream_chat(base, name, history, max_tokens=max_tokens, api_key=key):
                    if isinstance(part, client.Reply):
                        reply = part
                    else:
                        sys.stdout.write(part)
                        sys.stdout.flush()
                sys.stdout.write("\n")
        except client.ClientError as exc:
            raise ChainError(Problem(str(exc)), exit_code=1) from None
        history.append({"role": "assistant", "content": reply.text if reply else ""})


@app.command("quantize")
def quantize(
    config: ConfigFile = None,
    sets: Sets = None,
    model: str = typer.Option(None, "--model", help="Model directory to quantise."),
    out: Path = typer.Option(None, "--out", help="Where the quantised model goes (default: the deploy stage's own cache, so `serve` reuses it)."),
    method: str = typer.Option(None, "--method", help="awq (4-bit weights) | smooth_quant (W8A8)"),
    calib_data: str = typer.Option(None, "--calib-data", help="Local Hugging Face cache with the calibration set."),
    calib_dataset: str = typer.Option(None, "--calib-dataset", help="pileval | wikitext2 | c4 | ptb"),
    dry_run: DryRun = False,
) -> None:
    """Quantise weights with `lmdeploy lite` (GPU) → a QuantizedModel that `serve` serves as --model-format awq."""
    from internlm_chain.chain.artifacts import QuantizedModel
    from internlm_chain.chain.job import render_jobs_text
    from internlm_chain.chain.planner import Planner
    from internlm_chain.cli.output import info, print_json
    from internlm_chain.cli.output import out as console
    from internlm_chain.errors import ChainError, Problem, StageFailed
    from internlm_chain.launch.local import run_process
    from internlm_chain.stages.registry import get_stage

    flags = _flag_sets(**{"quantize.enabled": "true", "quantize.method": method, "quantize.calib_data": calib_data,
                          "quantize.calib_dataset": calib_dataset,
                          "model": model if config is not None else None})
    loaded = _load(config, [*(sets or []), *flags], model)
    stage = get_stage("deploy")
    ctx = Planner(loaded).context("deploy")
    # the stage's own cache by default: `ichain deploy serve` then reuses this quantisation instead of redoing it
    target = (out or stage.quantized_dir(ctx)).expanduser().resolve()
    # only the quantisation matters here: the serving checks (ports, keys) do not apply
    serving_only = (".port", ".host", ".api_key_env", ".proxy.", ".backend")
    problems = [p for p in stage.validate(ctx) if not any(s in p.path for s in serving_only)]
    if problems:
        raise ChainError(problems)
    job = stage.quantize_job(ctx, target)
    reused = out is None and stage.quantized_ready(ctx)
    if dry_run:
        if reused:
            info(f"already quantised with the same model and settings: {target} (nothing to run)")
        else:
            console.print(render_jobs_text([job]), markup=False)
        return
    if reused:
        info(f"already quantised with the same model and settings: {target}")
    else:
        result = run_process(job.model_copy(update={"log": str(target.parent / f"{target.name}.log")}))
        if result.state != "done" or not (target / "config.json").is_file():
            raise StageFailed(Problem(f"quantisation failed (exit {result.returncode})", hint=f"log: {result.log}"))
    art = QuantizedModel(path=str(target), model_format="awq" if job.argv.count("auto_awq") else "smooth_quant",
                         chat_template=loaded.config.model.chat_template)
    (target / "ichain-artifact.json").write_text(art.model_dump_json(indent=2), encoding="utf-8")
    print_json(art.model_dump())
