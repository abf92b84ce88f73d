"""`ichain plan`: recommend stages, fine-tuning method and parallel settings; write a chain file."""

from __future__ import annotations

from pathlib import Path

import typer

from internlm_chain.cli.common import Json


def plan(
    scenario: str = typer.Option(..., "--scenario", "-s", help="chat (use as is) | domain (adapt) | agent (act)."),
    model_size: str = typer.Option(..., "--model-size", "-m", help="Base model size, e.g. 7B, 1.8B, 20B."),
    gpus: int = typer.Option(1, "--gpus", help="Number of GPUs."),
    gpu_mem: float = typer.Option(80.0, "--gpu-mem", help="Memory per GPU in GiB."),
    data_tokens: str = typer.Option(None, "--data-tokens", help="Domain data size in tokens, e.g. 50M, 2B."),
    seq_len: int = typer.Option(2048, "--seq-len", help="Training sequence length."),
    model_path: str = typer.Option(None, "--model-path", help="Base model directory for the written chain."),
    output: Path = typer.Option(None, "-o", "--output", help="Write a ready chain file here (never overwrites)."),
    as_json: Json = False,
) -> None:
    """Plan a chain from model to application: which stages, which method, how much memory, which parallelism."""
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.plan.decide import recommend
    from internlm_chain.plan.report import plan_dict, print_plan
    from internlm_chain.plan.shapes import parse_size, shape_for

    try:
        params = parse_size(model_size)
        tokens = parse_size(data_tokens) if data_tokens else None
        result = recommend(scenario, shape_for(params), gpus, gpu_mem, tokens, seq_len)
    except ValueError as exc:
        raise ChainError(Problem(str(exc))) from None
    if output is not None:
        from internlm_chain.plan.chainfile import write_chain_file

        write_chain_file(result, output, model_path)
    if as_json:
        from internlm_chain.cli.output import print_json

        print_json(plan_dict(result))
    else:
        print_plan(result)
    if output is not None:
        from internlm_chain.cli.output import info

        info(f"wrote {output}; next: ichain config validate {output}")
