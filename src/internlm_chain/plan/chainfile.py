"""Write the chain file a plan recommends, checked against the schema before it is written."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from internlm_chain.errors import ChainError, Problem
from internlm_chain.plan.decide import Plan

DEEPSPEED = {(2, False): "zero2", (3, False): "zero3", (2, True): "zero2_offload", (3, True): "zero3_offload"}


def plan_chain(plan: Plan, model_path: str | None) -> dict:
    base = model_path or "${BASE_MODEL}"
    stages: dict = {}
    if "data" in plan.stages:
        stages["data"] = {"inputs": ["${DOMAIN_DATA}"], "languages": ["zh", "en"]}
    if "finetune" in plan.stages:
        ft: dict = {"method": plan.method, "mode": plan.mode}
        if plan.method == "full" and (plan.zero, plan.offload) in DEEPSPEED:
            ft["deepspeed"] = DEEPSPEED[(plan.zero, plan.offload)]
        ft["launcher"] = {"kind": "torchrun", "nproc_per_node": plan.gpus} if plan.gpus > 1 else {"kind": "local"}
        stages["finetune"] = ft
    stages["eval"] = {}
    deploy: dict = {"backend": "turbomind", "tp": plan.serve_tp}
    if plan.serve_quantized:
        deploy["quantize"] = {"enabled": True, "method": "awq", "calib_data": "${CALIB_DATA}"}
    stages["deploy"] = deploy
    if "agent" in plan.stages:
        stages["agent"] = {"agent": "react", "tools": ["Calculator"]}
    return {"name": f"{plan.scenario}-{plan.shape.name}", "device": "cuda",
            "model": {"path": base, "chat_template": "internlm2_chat"}, "stages": stages}


def render(plan: Plan, model_path: str | None) -> str:
    header = ["# Written by `ichain plan`. Why:"] + [f"#   - {r}" for r in plan.reasons]
    header.append("# Fill in the ${...} variables (or export them), then: ichain config validate THIS_FILE")
    return "\n".join(header) + "\n" + yaml.safe_dump(plan_chain(plan, model_path), sort_keys=False)


def write_chain_file(plan: Plan, output: Path, model_path: str | None) -> None:
    from internlm_chain.config.loader import load_chain

    if output.exists():
        raise ChainError(Problem(f"{output} already exists; not overwriting it", path="--output"))
    text = render(plan, model_path)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "chain.yaml"
        probe.write_text(text, encoding="utf-8")
        # the schema must accept what we recommend; the ${...} placeholders get harmless stand-ins
        load_chain(probe, environ={"BASE_MODEL": "/base", "DOMAIN_DATA": "/data", "CALIB_DATA": "/calib"})
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
