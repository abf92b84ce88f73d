"""`ichain finetune`: the finetune stage of a chain file, or a one-stage chain built from flags."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import StageRun, option_group, run_stage, stage_run_options, stage_verb

FLAGS_HELP = "Without -c: fine-tune from flags (--model and --data at least)."


@option_group("opts", stage_run_options)
def finetune(
    opts: StageRun = None,
    model: str = typer.Option(None, "--model", help="Base HF model directory. " + FLAGS_HELP),
    data: str = typer.Option(None, "--data", help="Training data (.jsonl/.json file or folder)."),
    method: str = typer.Option(None, "--method", help="lora (default), qlora or full."),
    mode: str = typer.Option(None, "--mode", help="sft (default), continue (continued pre-training), dpo, orpo or reward."),
    template: str = typer.Option(None, "--template", help="XTuner prompt template, e.g. internlm2_chat."),
    max_steps: int = typer.Option(None, "--max-steps", help="Train this many iterations."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    python: str = typer.Option(None, "--python", help="Run XTuner with this interpreter instead of the synced "
                                                      "runtime."),
    out: Path = typer.Option(None, "-o", "--out", help="Output folder (the chain's workdir). Default: "
                                                        "runs/finetune."),
) -> None:
    """Fine-tune with XTuner: the finetune stage of a chain file (-c), or a one-stage chain from flags."""
    flag_values = {"model": model, "data": data, "method": method, "mode": mode, "template": template,
                   "max_steps": max_steps}
    given = {k: v for k, v in flag_values.items() if v is not None}
    if opts.config is not None or not given:
        if opts.config is not None and (given or device or python or out):
            from internlm_chain.errors import ChainError, Problem

            names = ", ".join("--" + k.replace("_", "-") for k in [*given, *(
                n for n, v in (("device", device), ("python", python), ("out", out)) if v)])
            raise ChainError(Problem(f"{names} cannot be combined with -c",
                                     hint="use --set stages.finetune.FIELD=VALUE with a chain file"))
        stage_verb("finetune", opts)  # without -c: says that it needs a chain file
        return
    from internlm_chain.stages.finetune.flags import chain_from_flags

    run_stage(chain_from_flags(given, opts.sets, device=device, python=python, out=out), "finetune", opts)
