"""`merge`: fold a PEFT/LoRA adapter into its base model, checked and published atomically.

The job is peft's `merge_and_unload` in the xtuner runtime (what `xtuner convert merge` calls too), in
the base model's own dtype: XTuner's merge tool always loads in float16, which would silently turn a
bf16 or fp32 base into fp16. The same process then reloads the saved model and compares its logits
with base + adapter, so a merge that changed the function is never published.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.models import common

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class MergePlan(common.PublishedOutput):
    adapter: Path
    base: Path
    out: Path
    device: str
    dtype: str
    python: list[str]

    def jobs(self, max_new_tokens: int = 8) -> list[Job]:
        argv = [*self.python, str(common.WORKERS / "model_merge.py"), "--base", str(self.base),
                "--adapter", str(self.adapter), "--out", str(self.scratch), "--device", self.device,
                "--dtype", self.dtype, "--max-new-tokens", str(max_new_tokens)]
        return [common.job("merge", argv, self.out.parent,
                           "merge the adapter into the base (peft merge_and_unload), save safetensors + "
                           "tokenizer + chat template, reload and compare logits with base+adapter",
                           self.device, expected=[self.scratch / "config.json", self.scratch / common.REPORT])]


def plan_merge(adapter: Path, out: Path, base: Path | None = None, device: str = "auto", dtype: str = "auto",
               python: str | None = None) -> MergePlan:
    """Check every input (errors name the flag) and decide what will run; nothing is written."""
    if dtype not in DTYPES:
        raise common.fail("--dtype", f"'{dtype}' is not a dtype", ", ".join(DTYPES))
    adapter_path, cfg = common.adapter_dir(adapter)
    base_path = common.adapter_base(adapter_path, cfg, base)
    out_path = common.fresh_output(out)
    if out_path in (adapter_path, base_path) or base_path in out_path.parents or adapter_path in out_path.parents:
        raise common.fail("--out", f"{out_path} is inside an input folder", "write the merged model elsewhere")
    return MergePlan(adapter_path, base_path, out_path, common.resolve_device(device), dtype,
                     common.python_argv(python))


def merge(adapter: Path, out: Path, base: Path | None = None, device: str = "auto", dtype: str = "auto",
          python: str | None = None, max_new_tokens: int = 8, quiet: bool = False) -> dict:
    """Merge `adapter` into `base` (default: the adapter's own local base) and write the model to `out`.

    Returns the worker's report (logit difference, a greedy sample). `out` appears only when complete."""
    plan = plan_merge(adapter, out, base, device, dtype, python)
    common.check_runtime(plan.python, python is not None)
    return common.produce(plan.jobs(max_new_tokens), plan.scratch, plan.out, plan.log, quiet=quiet)
