"""The pretrain stage: InternEvo training through our driver, then conversion to an HF Llama model.

Jobs: `train` (distributed: torchrun, or srun with InternEvo's `--launcher slurm`) → `convert`
(merge shards, HF Llama layout, InternEvo probe logits) → `verify` (transformers loads it; logits
match). `ichain pretrain --validate` runs `validate_job` (InternEvo's loader + sanity rules, CPU).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from internlm_chain.chain.artifacts import Artifact, HFModel, InternEvoCheckpoint
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.base import JobResult, Stage, StageContext
from internlm_chain.stages.pretrain import render as R

WORKERS_DIR = Path(__file__).resolve().parents[2] / "workers"
VERIFY_RUNTIME = "xtuner"  # needs transformers >= 4.31 (GQA Llama); it is also the next consumer
REQUIRED_SHAPE = ("hidden_size", "num_layers", "num_attention_heads", "mlp_ratio")
# InternEvo config key → our settings field, so a broken rule names the field the user writes
FIELDS = {
    "parallel.tensor.size": "parallel.tensor.size", "parallel.tensor.mode": "parallel.tensor.mode",
    "parallel.weight.size": "parallel.weight.size", "parallel.zero1": "parallel.zero1",
    "parallel.pipeline.interleaved_overlap": "parallel.pipeline.interleaved_overlap",
    "parallel.pipeline.num_chunks": "parallel.pipeline.num_chunks", "data.micro_bsz": "data.micro_bsz",
    "data.use_packed_dataset": "data.packed", "data.pack_sample_into_one": "data.packed",
    "data.seq_len": "data.seq_len", "data.micro_num": "data.micro_num",
    "model.dtype": "dtype", "model.checkpoint": "activation_checkpoint",
    "ckpt.checkpoint_every": "checkpoint.every", "ckpt.save_ckpt_folder": "checkpoint.folder",
    "model_type": "model_type", "model.parallel_output": "use_flash_attn",
}


def rules():
    from internlm_chain.workers import pretrain_rules

    return pretrain_rules


def _abs(ctx: StageContext, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve())


class PretrainStage(Stage):
    name = "pretrain"
    runtime = "internevo"
    needs = ("data",)

    def runtimes_for(self, device: str) -> list[str]:
        return [self.runtime, VERIFY_RUNTIME]

    # ---- resolution (pure) ---------------------------------------------------------------------------
    def launcher(self, ctx: StageContext):
        from internlm_chain.launch.base import effective_settings

        return effective_settings(ctx.chain.config.launcher, ctx.settings.launcher)

    def world(self, ctx: StageContext) -> tuple[int, int]:
        s, launcher = ctx.settings, self.launcher(ctx)
        return (s.nodes or launcher.nnodes, s.gpus_per_node or launcher.nproc_per_node)

    def tokenizer_dir(self, ctx: StageContext) -> str | None:
        s = ctx.settings
        if s.tokenizer:
            return _abs(ctx, s.tokenizer)
        if "data.tokenizer" in ctx.inputs:
            return ctx.inputs["data.tokenizer"].path
        model = ctx.chain.config.model
        tok = model.tokenizer or model.path
        return _abs(ctx, tok) if tok else None

    def data_dir(self, ctx: StageContext) -> str | None:
        if ctx.settings.data.path:
            return _abs(ctx, ctx.settings.data.path)
        art = ctx.inputs.get("data.internevo")
        return art.path if art else None

    def tokenizer_size(self, ctx: StageContext) -> int | None:
        tok = self.tokenizer_dir(ctx)
        path = Path(tok, "tokenizer.json") if tok else None
        if path is None or not path.is_file():
            return None
        try:
            return rules().tokenizer_size(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def vocab_size(self, ctx: StageContext) -> tuple[int | None, str]:
        """(vocab size, where it came from). A data stage that will train the tokenizer bounds it."""
        explicit = ctx.settings.model.resolved().get("vocab_size")
        if explicit:
            return explicit, "model"
        size = self.tokenizer_size(ctx)
        if size:
            return size, "tokenizer"
        data = ctx.chain.config.stages.data
        if data is not None and data.enabled and (data.tokenizer or "train") == "train" and not ctx.settings.tokenizer:
            return data.tokenizer_vocab_size, "data.tokenizer_vocab_size (the tokenizer is trained up to this size)"
        return None, ""

    def resolved(self, ctx: StageContext) -> R.Resolved:
        nodes, per_node = self.world(ctx)
        shape = ctx.settings.model.resolved()
        shape["vocab_size"] = self.vocab_size(ctx)[0]
        folder = ctx.settings.checkpoint.folder
        return R.Resolved(
            shape=shape, nodes=nodes, gpus_per_node=per_node, device=ctx.device,
            train_folder=self.data_dir(ctx) or "", job_name=f"{ctx.chain.config.name}-pretrain",
            ckpt_folder=_abs(ctx, folder) if folder else str(ctx.out_dir / "checkpoints"))

    def config_path(self, ctx: StageContext) -> Path:
        return ctx.out_dir / "internevo_config.py"

    def rendered(self, ctx: StageContext) -> tuple[dict, str]:
        r = self.resolved(ctx)
        cfg = R.config_dict(ctx.settings, r)
        return cfg, R.render(cfg, r)

    # ---- validate --------------------------------------------------------------------------------------
    def validate(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        problems: list[Problem] = []
        shape = s.model.resolved()
        missing = [k for k in REQUIRED_SHAPE if k not in shape]
        if missing:
            return [ctx.problem("model", "the model shape is incomplete: " + ", ".join(missing) + " missing",
                                "set model.preset (internlm2-1.8b, internlm2-7b, internlm2-20b, tiny) or every field")]
        vocab, source = self.vocab_size(ctx)
        tok_size = self.tokenizer_size(ctx)
        if vocab is None:
            problems.append(ctx.problem("model.vocab_size", "the vocabulary size is unknown (no preset value, no "
                                        "tokenizer.json found)", "set model.vocab_size or tokenizer"))
        elif tok_size and tok_size > vocab:
            problems.append(ctx.problem("model.vocab_size", f"the tokenizer ({self.tokenizer_dir(ctx)}) has "
                                        f"{tok_size} tokens but vocab_size is {vocab} ({source})",
                                        f"set model.vocab_size: {tok_size}, or use the model's own tokenizer"))
        if s.tokenizer and not Path(_abs(ctx, s.tokenizer), "tokenizer.json").is_file():
            problems.append(ctx.problem("tokenizer", f"no tokenizer.json in {_abs(ctx, s.tokenizer)}",
                                        "a Hugging Face tokenizer directory"))
        problems += self._validate_data(ctx)
        problems += self._validate_world(ctx)
        problems += self._validate_device(ctx, {**shape, "vocab_size": vocab or 0})
        if problems:
            return problems
        cfg, _ = self.rendered(ctx)
        nodes, per_node = self.world(ctx)
        for key, message, rule in rules().check(cfg, nodes * per_node):
            problems.append(self.rule_problem(ctx, key, message, rule, nodes * per_node))
        return problems

    def rule_problem(self, ctx: StageContext, key: str, message: str, rule: str, world: int) -> Problem:
        field_ = FIELDS.get(key, key)
        if key.startswith("model.") and key not in FIELDS:
            field_ = key
        return ctx.problem(field_, f"{message} (world size {world})", f"InternEvo rule — {rule}")

    def _validate_data(self, ctx: StageContext) -> list[Problem]:
        path = self.data_dir(ctx)
        if path is None:
            return [ctx.problem("data.path", "no training data: no data stage output and no data.path",
                                "enable the data stage with outputs [internevo] or set data.path")]
        root = Path(path)
        if not root.exists():
            if ctx.settings.data.path:
                return [ctx.problem("data.path", f"not found: {path}")]
            return []  # the data stage has not produced it yet (dry-run of the chain)
        if any(root.glob("*.bin")):
            return [ctx.problem("data.path", f"{path} holds .bin files directly",
                                "InternEvo wants <root>/<type>/*.bin (e.g. en/, zh/): a flat folder asserts")]
        bins = list(root.glob("*/*.bin"))
        if not bins:
            return [ctx.problem("data.path", f"no <type>/*.bin files under {path}",
                                "InternEvo tokenized data: <root>/<type>/*.bin with .bin.meta")]
        no_meta = [b for b in bins if not Path(str(b) + ".meta").exists()]
        if no_meta:
            return [ctx.problem("data.path", f"{no_meta[0]} has no .bin.meta index",
                                "write it with the data stage (np.save of [byte_offset, n_tokens] rows)")]
        return []

    def _validate_world(self, ctx: StageContext) -> list[Problem]:
        s, launcher = ctx.settings, self.launcher(ctx)
        nodes, per_node = self.world(ctx)
        out = []
        if launcher.kind == "local" and nodes * per_node > 1:
            out.append(ctx.problem("launcher.kind", f"{nodes * per_node} processes need a distributed launcher",
                                   "set launcher.kind: torchrun or slurm"))
        if launcher.kind != "local":
            for ours, theirs, name in ((s.nodes, launcher.nnodes, "nnodes"),
                                       (s.gpus_per_node, launcher.nproc_per_node, "nproc_per_node")):
                if ours is not None and ours != theirs:
                    field_ = "nodes" if name == "nnodes" else "gpus_per_node"
                    out.append(ctx.problem(field_, f"{field_} is {ours} but the launcher starts {theirs} ({name})",
                                           f"set launcher.{name}: {ours} (or drop {field_})"))
        return out

    def _validate_device(self, ctx: StageContext, shape: dict) -> list[Problem]:
        if ctx.device != "cpu":
            return []
        s, out, rl = ctx.settings, [], rules()
        if s.use_flash_attn:
            out.append(ctx.problem("use_flash_attn", "flash attention needs CUDA; CPU smoke mode runs without it",
                                   "drop use_flash_attn (it defaults to false on CPU)"))
        par = s.parallel
        if par.tensor.mode == "isp" and (par.tensor.size > 1 or par.weight.size > 1):
            out.append(ctx.problem(
                "parallel.tensor.mode", "isp cannot train correctly in CPU smoke mode: it needs packed data, "
                "i.e. flash attention (CUDA) — without it InternEvo drops the position indexes under isp sequence "
                "parallel (data/utils.py:unpack_data), and with tensor size 1 it does not reduce the layer norms' "
                "gradients over the weight-parallel group (hybrid_zero_optim.py)",
                "on CPU use tensor.mode mtp (or pipeline/interleaved pipeline); isp on GPUs with tensor.size > 1 "
                "and use_flash_attn: true"))
        if s.dtype not in ("auto", "float32"):
            out.append(ctx.problem("dtype", f"CPU smoke mode trains in float32, not {s.dtype}", "dtype: auto"))
        if shape.get("vocab_size"):
            n = rl.param_count(shape)
            if n > rl.SMOKE_MAX_PARAMS:
                out.append(ctx.problem("model", f"CPU smoke mode refuses a {rl.human(n)}-parameter model (bound "
                                       f"{rl.human(rl.SMOKE_MAX_PARAMS)}); InternEvo pre-training needs GPUs",
                                       "use model.preset: tiny on CPU, or run with device: cuda"))
        return out

    # ---- plan (pure) -------------------------------------------------------------------------------------
    def validate_job(self, ctx: StageContext, config_path: Path, text: str, report: Path) -> Job:
        nodes, per_node = self.world(ctx)
        return Job(stage=self.name, name="validate", runtime=self.runtime, cwd=str(ctx.out_dir),
                   argv=[*ctx.python(self.runtime), str(WORKERS_DIR / "pretrain_validate.py"),
                         "--config", str(config_path), "--world-size", str(nodes * per_node), "--out", str(report)],
                   env={"CUDA_VISIBLE_DEVICES": ""}, files={str(config_path): text},
                   expected_outputs=[str(report)],
                   description=f"check the config with InternEvo's loader and rules for {nodes * per_node} "
                               "process(es)")

    def plan(self, ctx: StageContext) -> list[Job]:
        s, out = ctx.settings, ctx.out_dir
        r = self.resolved(ctx)
        _, text = self.rendered(ctx)
        cfg_path = self.config_path(ctx)
        launcher = self.launcher(ctx)
        smoke = ctx.device == "cpu"
        tok = self.tokenizer_dir(ctx)
        # no separate validate job: the driver applies the same rules for the world it finds itself in
        # (a Slurm allocation for a 10-second check would be waste); `--validate` runs validate_job
        jobs: list[Job] = []

        from internlm_chain.launch.base import derived_port

        port = launcher.master_port or derived_port(ctx.chain.workdir, self.name)
        argv = [*ctx.python(self.runtime), str(WORKERS_DIR / "pretrain_driver.py"), "--config", str(cfg_path),
                "--launcher", "slurm" if launcher.kind == "slurm" else "torch", "--port", str(port),
                "--device", "cpu" if smoke else "cuda", "--seed", str(s.seed), "--metrics", str(out / "metrics.jsonl")]
        if s.convert_to_hf:
            argv += ["--probe-out", str(out / "train_probe.npz")]
        if tok:
            argv += ["--tokenizer", tok]
        env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        if smoke:
            env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
        jobs.append(Job(
            stage=self.name, name="train", runtime=self.runtime, cwd=str(out), argv=argv, env=env,
            files={str(cfg_path): text}, distributed=True, slurm_launch="srun",
            resources=Resources(nodes=r.nodes, gpus_per_node=0 if smoke else r.gpus_per_node),
            expected_outputs=[r.ckpt_folder, str(out / "metrics.jsonl")],
            description=("SMOKE MODE (CPU, gloo, tiny model): " if smoke else "")
            + f"InternEvo pre-training, {s.schedule.total_steps} steps on {r.nodes}×{r.gpus_per_node}"))
        if s.convert_to_hf:
            jobs += self.convert_jobs(ctx, r, cfg_path, tok)
        return jobs

    def convert_jobs(self, ctx: StageContext, r: R.Resolved, cfg_path: Path, tok: str | None) -> list[Job]:
        out = ctx.out_dir
        dtype = "float32" if R.dtype_of(ctx.settings, ctx.device) == "torch.float32" else "bfloat16"
        argv = [*ctx.python(self.runtime), str(WORKERS_DIR / "pretrain_to_hf.py"), "--checkpoints", r.ckpt_folder,
                "--config", str(cfg_path), "--out", str(out / "hf"), "--dtype", dtype,
                "--probe", str(out / "hf_probe.npz"), "--chat-template", ctx.chain.config.model.chat_template]
        if tok:
            argv += ["--tokenizer", tok]
        convert = Job(stage=self.name, name="convert", runtime=self.runtime, cwd=str(out), argv=argv,
                      env={"CUDA_VISIBLE_DEVICES": "", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                      expected_outputs=[str(out / "hf" / "config.json"), str(out / "hf_probe.npz")],
                      description="merge the newest checkpoint's shards into an HF Llama-layout model")
        verify = Job(stage=self.name, name="verify", runtime=VERIFY_RUNTIME, cwd=str(out),
                     argv=[*ctx.python(VERIFY_RUNTIME), str(WORKERS_DIR / "pretrain_verify_hf.py"),
                           "--model", str(out / "hf"), "--probe", str(out / "hf_probe.npz"),
                           "--out", str(out / "hf_verify.json"), "--train-probe", str(out / "train_probe.npz")],
                     env={"CUDA_VISIBLE_DEVICES": ""}, expected_outputs=[str(out / "hf_verify.json")],
                     description="load the converted model in transformers and compare logits with InternEvo's")
        return [convert, verify]

    # ---- outputs -------------------------------------------------------------------------------------------
    def _artifacts(self, ctx: StageContext, root: Path, step: int, ckpt_root: str) -> dict[str, Artifact]:
        s = ctx.settings
        arts: dict[str, Artifact] = {"checkpoint": InternEvoCheckpoint(
            path=str(Path(ckpt_root) / str(step)),
            meta={"step": step, "model_type": s.model_type,
                  "tensor": s.parallel.tensor.size, "pipeline": s.parallel.pipeline.size,
                  "tensor_mode": s.parallel.tensor.mode, "weight": s.parallel.weight.size,
                  "num_chunks": s.parallel.pipeline.num_chunks})}
        if s.convert_to_hf:
            arts["model"] = HFModel(path=str(root / "hf"), chat_template=ctx.chain.config.model.chat_template,
                                    meta={"architecture": "LlamaForCausalLM", "from_step": step})
        return arts

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        folder = ctx.settings.checkpoint.folder
        ckpt_root = _abs(ctx, folder) if folder else str(final_dir / "checkpoints")
        return self._artifacts(ctx, final_dir, ctx.settings.schedule.total_steps, ckpt_root)

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        s, out = ctx.settings, ctx.out_dir
        logs = {r.job.name: r.log for r in results}
        steps = read_metrics(out / "metrics.jsonl")
        total = s.schedule.total_steps
        if not steps or max(steps) < total:
            raise StageFailed(Problem(f"pretrain: training stopped at step {max(steps) if steps else 0} of {total}",
                                      hint=f"log: {logs.get('train')}"))
        losses = [steps[i]["loss"] for i in sorted(steps)]
        if not all(math.isfinite(x) for x in losses):
            raise StageFailed(Problem("pretrain: the loss is not finite", hint=f"log: {logs.get('train')}"))
        r = self.resolved(ctx)
        step_dir = Path(r.ckpt_folder) / str(total)
        if not any(step_dir.glob("model_tp*_pp*.pt")):
            raise StageFailed(Problem(f"pretrain: no final checkpoint in {step_dir}", hint=f"log: {logs.get('train')}"))
        ctx.metrics.update({"loss_last": losses[-1], "loss_first": losses[0], "steps": total,
                            "loss": {str(i): steps[i]["loss"] for i in sorted(steps)},
                            "tokens_per_step": steps[total].get("tokens"), "smoke_mode": ctx.device == "cpu"})
        if s.convert_to_hf:
            try:
                report = json.loads((out / "hf_verify.json").read_text(encoding="utf-8"))
                json.loads((out / "hf" / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StageFailed(Problem(f"pretrain: the HF conversion left no readable result ({exc})",
                                          hint=f"log: {logs.get('convert') or logs.get('verify')}")) from None
            if not report.get("ok"):
                raise StageFailed(Problem(f"pretrain: the converted model does not match InternEvo "
                                          f"(max |Δlogits| {report.get('max_abs_diff')})",
                                          hint=f"log: {logs.get('verify')}"))
            ctx.metrics["hf_max_abs_diff"] = report["max_abs_diff"]
            if "trained_max_abs_diff" in report:
                ctx.metrics["hf_vs_trained_max_abs_diff"] = report["trained_max_abs_diff"]
        return self._artifacts(ctx, out, total, r.ckpt_folder)


def read_metrics(path: Path) -> dict[int, dict]:
    """Step → record; a resumed run re-does steps after its last checkpoint, the later record wins."""
    steps: dict[int, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return steps
    for line in lines:
        try:
            rec = json.loads(line)
            steps[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill
    return steps


STAGE = PretrainStage()
