"""Which runtimes a chain file needs, and how each of its stages gets one (synced env, python, image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from internlm_chain.config.base import RuntimeSpec
    from internlm_chain.config.loader import LoadedChain

# Used when a stage's implementation does not say (or has not landed yet). Deploy serves with
# LMDeploy on GPUs and with the CPU stand-in server otherwise.
_DEFAULT = {
    "data": {"cpu": "data", "cuda": "data"},
    "pretrain": {"cpu": "internevo", "cuda": "internevo"},
    "finetune": {"cpu": "xtuner", "cuda": "xtuner"},
    "eval": {"cpu": "opencompass", "cuda": "opencompass"},
    "deploy": {"cpu": "serve-cpu", "cuda": "lmdeploy"},
    "agent": {"cpu": "agent", "cuda": "agent"},
}


def stage_runtimes(stage: str, device: str) -> list[str]:
    """A stage implementation may declare `runtimes_for(device)`; else its `runtime`; else the table."""
    from internlm_chain.stages.registry import get_stage

    impl = get_stage(stage)
    if getattr(impl, "available", False):
        pick = getattr(impl, "runtimes_for", None)
        if callable(pick):
            return list(pick(device))
        if getattr(impl, "runtime", None):
            return [impl.runtime]
    fallback = _DEFAULT.get(stage, {}).get(device)
    return [fallback] if fallback else []


@dataclass(frozen=True)
class StageRuntime:
    stage: str
    runtime: str
    variant: str
    spec: RuntimeSpec | None  # python / image instead of a synced env, when set

    @property
    def kind(self) -> str:
        if self.spec and self.spec.python:
            return "python"
        if self.spec and self.spec.image:
            return "image"
        return "env"


def chain_device(loaded: LoadedChain) -> str:
    if loaded.config.device != "auto":
        return loaded.config.device
    from internlm_chain.runtimes.machine import detect_device

    return detect_device()


def chain_runtimes(loaded: LoadedChain) -> list[StageRuntime]:
    from internlm_chain.runtimes.resolve import runtime_spec, variant_for

    device = chain_device(loaded)
    out = []
    for stage in loaded.config.enabled_stages():
        for runtime in stage_runtimes(stage, device):
            spec = runtime_spec(loaded, stage, runtime)
            out.append(StageRuntime(stage, runtime, variant_for(loaded, device, spec), spec))
    return out
