"""`ichain model`: download, inspect, merge, convert and chat with models outside a chain.

Each verb parses flags and calls one plain function of `internlm_chain.models`; with --dry-run it prints
the exact jobs instead (nothing is written)."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import DryRun, Json, Quiet

app = typer.Typer(help="Model utilities outside a chain: download, inspect, merge an adapter, convert a checkpoint, "
                  "chat.",
                  no_args_is_help=True)

Device = typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda when nvidia-smi lists a GPU).")
Python = typer.Option(None, "--python", help="Interpreter of the xtuner runtime (default: the synced one).")
Out = typer.Option(..., "--out", "-o", help="Output directory (must not exist; appears only when complete).")


def _show(jobs, scratch, out, as_json: bool) -> None:
    from internlm_chain.chain.job import render_jobs_json
    from internlm_chain.models.common import dry_run_text

    text = render_jobs_json(jobs) + "\n" if as_json else dry_run_text(jobs, scratch, out)
    typer.echo(text, nl=False)


def _plan_or_publish(dry_run: bool, as_json: bool, out: Path, plan, publish) -> None:
    """--dry-run shows `plan()`'s jobs; otherwise `publish()` writes `out` and its report is printed."""
    if dry_run:
        planned = plan()
        _show(planned.jobs(), planned.scratch, planned.out, as_json)
        return
    _done(publish(), out.expanduser().resolve(), as_json)


def _done(report: dict, out: Path, as_json: bool) -> None:
    from internlm_chain.cli.output import print_json

    if as_json:
        print_json({"out": str(out), **report})
    else:
        typer.echo(str(out))


@app.command("download")
def download(
    repo: str = typer.Argument(..., help="Repo id on the hub, e.g. internlm/internlm2-chat-1_8b "
                               "(Shanghai_AI_Laboratory/internlm2-chat-1_8b on ModelScope)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (appears only when complete; an "
                             "interrupted download resumes on the next run)."),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit (default: main; master on "
                                 "ModelScope)."),
    source: str = typer.Option("hf", "--source", help="hf (the Hugging Face Hub or a mirror of it) or modelscope "
                               "(modelscope.cn, with ModelScope's own client)."),
    include: list[str] = typer.Option(None, "--include", help="Also fetch files matching this glob, e.g. '*.gguf' "
                                      "or 'original/' (repeatable; '*' = the whole repo)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip files matching this glob (repeatable)."),
    endpoint: str = typer.Option(None, "--endpoint", help="Hub or mirror URL (default: $HF_ENDPOINT, else "
                                 "https://huggingface.co), e.g. https://hf-mirror.com; with --source modelscope: "
                                 "$MODELSCOPE_ENDPOINT, else https://modelscope.cn."),
    token_env: str = typer.Option(None, "--token-env", help="NAME of the environment variable holding the token "
                                  "(private or gated repos); the token never goes into argv or files."),
    python: str = typer.Option(None, "--python", help="Interpreter of the hub runtime (default: the synced one)."),
    dry_run: DryRun = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Download a model from the Hugging Face Hub, a mirror or ModelScope: weights, config, tokenizer."""
    from internlm_chain.models import download as download_fn
    from internlm_chain.models.download import dry_run_text, plan_download
    from internlm_chain.models.inspect_model import inspect_model, render_text

    if dry_run:
        plan = plan_download(repo, out, revision, include or [], exclude or [], endpoint, token_env, python, source)
        if as_json:
            _show([plan.job()], plan.scratch, plan.out, True)
        else:
            typer.echo(dry_run_text(plan), nl=False)
        return
    report = download_fn(repo, out, revision, include or [], exclude or [], endpoint, token_env, python,
                         quiet=quiet or as_json, source=source)
    path = out.expanduser().resolve()
    info = inspect_model(path)
    if as_json:
        from internlm_chain.cli.output import print_json

        print_json({"out": str(path), **report, "inspect": info})
    else:
        if report.get("already"):
            typer.echo(f"# {path} already holds {report['repo']}@{report['revision']} (commit {report['commit']})",
                       err=True)
        typer.echo(render_text(info), nl=False)


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="A Hugging Face model or PEFT adapter folder."),
    as_json: Json = False,
) -> None:
    """Architecture, parameters, dtype, vocab, context length, chat template, adapter, size (no weights loaded)."""
    from internlm_chain.cli.output import print_json
    from internlm_chain.models.inspect_model import inspect_model, render_text

    info = inspect_model(path)
    if as_json:
        print_json(info)
    else:
        typer.echo(render_text(info), nl=False)


@app.command("merge")
def merge(
    adapter: Path = typer.Option(..., "--adapter", help="PEFT/LoRA adapter folder."),
    out: Path = Out,
    base: Path = typer.Option(None, "--base", help="Base model folder (default: the adapter's own, when local)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (the base's), float32, bfloat16 or float16."),
    device: str = Device,
    python: str = Python,
    dry_run: DryRun = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Merge an adapter into its base model; the merged model must reproduce base+adapter's logits."""
    from internlm_chain.models import merge as merge_fn
    from internlm_chain.models.merge import plan_merge

    _plan_or_publish(dry_run, as_json, out, lambda: plan_merge(adapter, out, base, device, dtype, python),
                     lambda: merge_fn(adapter, out, base=base, device=device, dtype=dtype, python=python,
                                      quiet=quiet or as_json))


@app.command("convert")
def convert(
    checkpoint: Path = typer.Argument(..., help="XTuner checkpoint: work_dir/iter_N.pth (or a DeepSpeed folder)."),
    config: Path = typer.Option(..., "--config", "-c", help="The XTuner config it was trained with."),
    out: Path = Out,
    fp32: bool = typer.Option(None, "--fp32/--fp16", help="Weights' dtype (default: fp32 on CPU, fp16 on GPU)."),
    device: str = Device,
    python: str = Python,
    dry_run: DryRun = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """XTuner checkpoint → Hugging Face adapter (LoRA runs) or model (full runs), loaded and sampled."""
    from internlm_chain.models import convert as convert_fn
    from internlm_chain.models.convert import plan_convert

    _plan_or_publish(dry_run, as_json, out, lambda: plan_convert(checkpoint, config, out, device, fp32, python),
                     lambda: convert_fn(checkpoint, config, out, device=device, fp32=fp32, python=python,
                                        quiet=quiet or as_json))


@app.command("chat")
def chat(
    model: Path = typer.Argument(..., help="Model folder (the base, with --adapter)."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter to apply on top."),
    message: list[str] = typer.Option(None, "--message", "-m", help="Reply to this and exit (repeatable: turns)."),
    system: str = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest reply, in tokens."),
    template: str = typer.Option(None, "--template", help="XTuner template for a model without a chat template "
                                 "(default internlm2_chat)."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    device: str = Device,
    python: str = Python,
    dry_run: DryRun = False,
) -> None:
    """Chat on the terminal: one-shot with --message, else read lines from stdin (an empty line ends)."""
    from internlm_chain.models import chat as chat_fn
    from internlm_chain.models.chat import plan_chat

    if dry_run:
        plan = plan_chat(model, adapter, message or [], system, max_new_tokens, template, device, temperature, python)
        _show([plan.job()], None, None, False)
        return
    code = chat_fn(model, adapter, message or [], system, max_new_tokens, template, device, temperature, python)
    if code:
        raise typer.Exit(1)

