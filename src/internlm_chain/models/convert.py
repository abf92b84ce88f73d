"""`convert`: an XTuner training checkpoint (.pth, or a DeepSpeed checkpoint folder) → a Hugging Face
PEFT adapter (LoRA/QLoRA runs) or model (full runs), with XTuner's own `pth_to_hf`, then loaded and
sampled before it is published."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.models import common

# the base model a rendered XTuner config names (our templates and XTuner's own configs spell it so)
_MODEL_LINE = re.compile(r"^pretrained_model_name_or_path\s*=\s*(['\"])(.+?)\1\s*(#.*)?$", re.M)
_TEMPLATE_LINE = re.compile(r"^prompt_template\s*=\s*PROMPT_TEMPLATE\.(\w+)\s*(#.*)?$", re.M)


@dataclass(frozen=True)
class ConvertPlan(common.PublishedOutput):
    checkpoint: Path
    config: Path
    out: Path
    device: str
    fp32: bool
    python: list[str]
    template: str | None = None  # the XTuner prompt template the config trained with (SFT runs)

    def jobs(self, max_new_tokens: int = 8) -> list[Job]:
        py = self.python
        convert = [*py, "-m", "xtuner.tools.model_converters.pth_to_hf", str(self.config), str(self.checkpoint),
                   str(self.scratch), "--safe-serialization"]
        if self.fp32:
            convert.append("--fp32")
        verify = [*py, str(common.WORKERS / "model_verify.py"), "--model", str(self.scratch), "--device",
                  self.device, "--max-new-tokens", str(max_new_tokens), "--source", str(self.checkpoint)]
        if self.template:
            verify += ["--template", self.template]
        # mmengine checkpoints pickle its own objects; torch >= 2.6 refuses them without this (our input)
        env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        return [
            common.job("pth_to_hf", convert, self.out.parent, "XTuner pth_to_hf: checkpoint → PEFT adapter or "
                       "HF model (safetensors)", self.device, expected=[self.scratch], env=env),
            common.job("verify", verify, self.out.parent, "load the result (an adapter on its base), copy the "
                       "base's tokenizer into an adapter, set the training chat template, generate a few tokens", self.device,
                       expected=[self.scratch / common.REPORT]),
        ]


def config_base_model(config: Path) -> str | None:
    m = _MODEL_LINE.search(config.read_text(encoding="utf-8", errors="replace"))
    return m.group(2) if m else None


def config_template(config: Path) -> str | None:
    m = _TEMPLATE_LINE.search(config.read_text(encoding="utf-8", errors="replace"))
    return m.group(1) if m else None


def plan_convert(checkpoint: Path, config: Path, out: Path, device: str = "auto", fp32: bool | None = None,
                 python: str | None = None) -> ConvertPlan:
    ckpt = checkpoint.expanduser().resolve()
    if not ckpt.exists():
        raise common.fail("CHECKPOINT", f"not found: {ckpt}", "an XTuner .pth (work_dir/iter_N.pth)")
    if ckpt.is_file() and ckpt.suffix != ".pth":
        raise common.fail("CHECKPOINT", f"{ckpt} is not a .pth checkpoint")
    if ckpt.is_dir() and not any(ckpt.rglob("*model_states.pt")):
        raise common.fail("CHECKPOINT", f"{ckpt} is a folder but not a DeepSpeed checkpoint (no *model_states.pt)")
    cfg = config.expanduser().resolve()
    if not cfg.is_file():
        raise common.fail("--config", f"XTuner config not found: {cfg}",
                          "the config the checkpoint was trained with (e.g. the finetune stage's xtuner_config.py)")
    if cfg.suffix != ".py":
        raise common.fail("--config", f"{cfg} is not an XTuner python config (.py)")
    base = config_base_model(cfg)
    if base and base.startswith(("/", "~", ".")) and not Path(base).expanduser().is_dir():
        raise common.fail("--config", f"the config's base model is missing: {base} ({cfg})",
                          "pth_to_hf rebuilds the model from it")
    out_path = common.fresh_output(out)
    dev = common.resolve_device(device)
    return ConvertPlan(ckpt, cfg, out_path, dev, dev == "cpu" if fp32 is None else fp32, common.python_argv(python),
                       config_template(cfg))


def convert(checkpoint: Path, config: Path, out: Path, device: str = "auto", fp32: bool | None = None,
            python: str | None = None, max_new_tokens: int = 8, quiet: bool = False) -> dict:
    """Convert an XTuner checkpoint to Hugging Face format at `out` (fp32 on CPU, XTuner's fp16 on GPU unless
    `fp32`). Returns the verify report; `out` appears only when complete."""
    plan = plan_convert(checkpoint, config, out, device, fp32, python)
    common.check_runtime(plan.python, python is not None)
    return common.produce(plan.jobs(max_new_tokens), plan.scratch, plan.out, plan.log, quiet=quiet)
