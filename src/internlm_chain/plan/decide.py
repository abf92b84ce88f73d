"""The decision table of `ichain plan`.

Scenario → stages: `chat` uses the model as it is (deploy, evaluate the endpoint); `domain` adapts it
(fine-tune, evaluate base vs tuned, deploy); `agent` adds an agent on top of the deployed model (and
fine-tunes first when domain data is given). Method: full fine-tuning when it fits (trying ZeRO-2, ZeRO-3,
then ZeRO-3 with CPU offload), else LoRA, else QLoRA, else nothing fits. Data of a billion tokens or more
is continued pre-training; less is supervised fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from internlm_chain.plan.memory import GIB, Estimate, serving, training
from internlm_chain.plan.shapes import Shape

SCENARIOS = ("chat", "domain", "agent")
CONTINUED_PRETRAINING_TOKENS = 1e9
USABLE_FRACTION = 0.92  # leave room the estimate does not see (kernels' workspaces, spikes)
SERVE_WEIGHT_FRACTION = 0.66  # LMDeploy needs the weights plus a useful KV cache: keep a third of the card for it


@dataclass
class Plan:
    scenario: str
    shape: Shape
    gpus: int
    gpu_mem_gib: float
    stages: list[str]
    method: str | None = None  # full | lora | qlora | None (no fine-tuning)
    mode: str | None = None  # sft | continue
    zero: int = 0
    offload: bool = False
    serve_tp: int = 1
    serve_quantized: bool = False
    candidates: list[tuple[str, Estimate, bool]] = field(default_factory=list)  # label, estimate, fits
    reasons: list[str] = field(default_factory=list)


def _fits(est: Estimate, gpu_mem_gib: float) -> bool:
    return est.total <= gpu_mem_gib * GIB * USABLE_FRACTION


def choose_finetune(plan: Plan, seq_len: int, micro_batch: int) -> None:
    tries = [("full", 2, False), ("full", 3, False), ("full", 3, True), ("lora", 0, False), ("qlora", 0, False)]
    if plan.gpus == 1:
        # one GPU: offloading 12 bytes per parameter of optimizer state to the host is too slow to recommend
        tries = [("full", 0, False), ("lora", 0, False), ("qlora", 0, False)]
    plan.reasons.append(f"usable per GPU: {USABLE_FRACTION:.0%} of {plan.gpu_mem_gib:g} GiB; the rest is headroom "
                        "for what the estimate cannot see (kernel workspaces, allocator spikes)")
    for method, zero, offload in tries:
        est = training(plan.shape, method, plan.gpus, seq_len, micro_batch, zero, offload)
        fits = _fits(est, plan.gpu_mem_gib)
        label = method + (f" ZeRO-{zero}" if zero else "") + (" +offload" if offload else "")
        plan.candidates.append((label, est, fits))
        if fits and plan.method is None:
            plan.method, plan.zero, plan.offload = method, zero, offload
            plan.reasons.append(f"{label}: {est.total / GIB:.1f} GiB per GPU fits in {_usable(plan)}")
            break
        plan.reasons.append(f"{label}: {est.total / GIB:.1f} GiB per GPU does not fit in {_usable(plan)}")


def _usable(plan: Plan) -> str:
    return f"{plan.gpu_mem_gib * USABLE_FRACTION:.2f} GiB usable"


def choose_serving(plan: Plan) -> None:
    tp = 1
    while tp <= plan.gpus:
        est = serving(plan.shape, tp)
        if est.total <= plan.gpu_mem_gib * GIB * SERVE_WEIGHT_FRACTION:
            plan.serve_tp = tp
            plan.reasons.append(f"serve bf16 with tensor parallel {tp}: {est.total / GIB:.1f} GiB weights+overhead per GPU")
            return
        tp *= 2
    plan.serve_quantized = True
    tp = 1
    while tp <= plan.gpus and serving(plan.shape, tp, quantized=True).total > plan.gpu_mem_gib * GIB * SERVE_WEIGHT_FRACTION:
        tp *= 2
    plan.serve_tp = min(tp, max(1, plan.gpus))
    plan.reasons.append(
        f"bf16 weights leave too little KV cache on {plan.gpus} GPU(s) (they may use at most "
        f"{SERVE_WEIGHT_FRACTION:.0%} of each): serve AWQ 4-bit with tensor parallel {plan.serve_tp}")


def recommend(scenario: str, shape: Shape, gpus: int, gpu_mem_gib: float, data_tokens: float | None = None,
              seq_len: int = 2048, micro_batch: int = 1) -> Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if gpus < 1 or gpu_mem_gib <= 0:
        raise ValueError("need at least one GPU with some memory")
    finetune = scenario == "domain" or (scenario == "agent" and bool(data_tokens))
    stages = (["data", "finetune"] if finetune else []) + ["eval", "deploy"] + (["agent"] if scenario == "agent" else [])
    plan = Plan(scenario, shape, gpus, gpu_mem_gib, stages)
    if finetune:
        plan.mode = "continue" if (data_tokens or 0) >= CONTINUED_PRETRAINING_TOKENS else "sft"
        plan.reasons.append(
            f"{'continued pre-training' if plan.mode == 'continue' else 'supervised fine-tuning'}: "
            f"{(data_tokens or 0) / 1e6:g}M tokens of domain data")
        choose_finetune(plan, seq_len, micro_batch)
        if plan.method is None:
            plan.reasons.append("no fine-tuning method fits this hardware: use more or larger GPUs, or a smaller model")
            plan.stages = [s for s in plan.stages if s not in ("data", "finetune")]
    else:
        plan.reasons.append("the model is used as it is: no fine-tuning")
    choose_serving(plan)
    return plan
