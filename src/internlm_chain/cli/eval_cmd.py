"""`ichain eval`: OpenCompass evaluation — of a chain file's eval stage, or of models named by flags."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Json, StageRun, option_group, run_stage, stage_run_options, stage_verb

app = typer.Typer(help="Evaluate models and endpoints with OpenCompass.", invoke_without_command=True)


@app.callback()
@option_group("opts", stage_run_options)
def eval_(
    ctx: typer.Context,
    opts: StageRun = None,
    models: list[str] = typer.Option(None, "--model", help="A Hugging Face model directory (repeatable)."),
    model_type: str = typer.Option("chat", "--model-type", help="chat or base, for every --model."),
    endpoints: list[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL, e.g. "
                                        "http://127.0.0.1:23333/v1 (repeatable; pair with --served-name)."),
    served_names: list[str] = typer.Option(None, "--served-name", help="Model name the endpoint serves."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Local tokenizer for endpoints (token counting)."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the endpoints' key."),
    datasets: str = typer.Option(None, "--datasets", help="Built-in configs, comma-separated: gsm8k_gen,ceval_gen."),
    data_dir: str = typer.Option(None, "--data-dir", help="Local OpenCompass data root (holds data/<name>/)."),
    custom: list[str] = typer.Option(None, "--custom", help="A custom .jsonl/.csv dataset (repeatable)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N rows of every dataset."),
    max_out_len: int = typer.Option(None, "--max-out-len", min=1, help="Max new tokens per answer."),
    batch_size: int = typer.Option(None, "--batch-size", min=1),
    device: str = typer.Option(None, "--device", help="cpu, cuda or auto (default auto)."),
    output: Path = typer.Option(None, "-o", "--output", help="Work directory for the flags form (default runs/eval)."),
    python: str = typer.Option(None, "--runtime-python", help="Run OpenCompass with this interpreter instead of "
                               "the synced opencompass runtime."),
) -> None:
    """Run the eval stage of a chain file (-c), or evaluate the models given by flags."""
    if ctx.invoked_subcommand is not None:
        return
    flags_used = any([models, endpoints, datasets, custom])
    if opts.config is not None or not flags_used:
        if flags_used:
            from internlm_chain.errors import ChainError, Problem

            raise ChainError(Problem("use either -c FILE or --model/--endpoint/--datasets/--custom, not both"))
        stage_verb("eval", opts)
        return
    from internlm_chain.config.loader import load_chain
    from internlm_chain.stages.eval.flags import chain_from_flags

    chain_file = chain_from_flags(
        models=models or [], model_type=model_type, endpoints=endpoints or [], served_names=served_names or [],
        tokenizer=tokenizer, api_key_env=api_key_env, datasets=datasets, data_dir=data_dir, custom=custom or [], limit=limit,
        max_out_len=max_out_len, batch_size=batch_size, device=device, output=output or Path("runs/eval"),
        python=python, dry_run=opts.dry_run)
    run_stage(load_chain(chain_file, opts.sets), "eval", opts)


@app.command("compare")
def compare(
    run_a: Path = typer.Argument(..., help="A chain workdir (with manifest.json), an eval stage dir or a report.json."),
    run_b: Path = typer.Argument(..., help="The run to compare against RUN_A (deltas are B − A)."),
    as_json: Json = False,
) -> None:
    """Score deltas between two eval runs, per model × dataset × metric."""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.stages.eval.compare import compare_reports, compare_table, load_report

    a, b = load_report(run_a), load_report(run_b)
    rows = compare_reports(a, b)
    if as_json:
        print_json(rows)
    else:
        out.print(compare_table(rows, str(run_a), str(run_b)))
