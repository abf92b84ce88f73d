"""Show a plan: the recommendation, and the memory estimate behind every option considered."""

from __future__ import annotations

from internlm_chain.plan.decide import Plan
from internlm_chain.plan.memory import serving


def plan_dict(plan: Plan) -> dict:
    return {
        "scenario": plan.scenario, "model": plan.shape.name, "params": plan.shape.params,
        "gpus": plan.gpus, "gpu_mem_gib": plan.gpu_mem_gib, "stages": plan.stages,
        "finetune": None if plan.method is None else {
            "method": plan.method, "mode": plan.mode, "zero": plan.zero, "offload": plan.offload},
        "serve": {"tp": plan.serve_tp, "awq": plan.serve_quantized,
                  "memory_gib": serving(plan.shape, plan.serve_tp, plan.serve_quantized).gib()},
        "candidates": [{"option": label, "fits": fits, "memory_gib": est.gib()}
                       for label, est, fits in plan.candidates],
        "reasons": plan.reasons,
    }


def print_plan(plan: Plan) -> None:
    from rich.table import Table

    from internlm_chain.cli.output import out

    out.print(f"[bold]{plan.scenario}[/] with {plan.shape.name} ({plan.shape.params / 1e9:.2f}B parameters) "
              f"on {plan.gpus} × {plan.gpu_mem_gib:g} GiB GPU(s)")
    out.print("stages: " + " → ".join(plan.stages), markup=False)
    if plan.candidates:
        table = Table(title="fine-tuning memory per GPU (GiB)")
        for col in ("option", "weights", "grads", "optimizer", "activations", "total", "fits"):
            table.add_column(col, justify="right" if col not in ("option", "fits") else "left")
        for label, est, fits in plan.candidates:
            g = est.gib()
            table.add_row(label, *(f"{g[k]:.1f}" for k in ("weights", "gradients", "optimizer", "activations", "total")),
                          "yes" if fits else "no")
        out.print(table)
    for reason in plan.reasons:
        out.print(f"- {reason}", markup=False)
