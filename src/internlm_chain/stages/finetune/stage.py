"""The finetune stage: XTuner SFT / continued pre-training / DPO / ORPO / reward model, with full, LoRA or
QLoRA weights.

Jobs (all in the staging dir, so a re-run with the same settings finds XTuner's checkpoints there):
check-data [check-replay] → train → convert (pth_to_hf) → [merge] → verify.
"""

from __future__ import annotations

import json
from pathlib import Path

from internlm_chain.chain.artifacts import Adapter, Artifact, HFModel, RewardModel, XTunerCheckpoint
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.base import JobResult, Stage, StageContext
from internlm_chain.stages.finetune import preference
from internlm_chain.stages.finetune.render import (
    ConfigSpec,
    deepspeed_cpu_config,
    render_check_config,
    render_config,
)
from internlm_chain.stages.finetune.settings import XTUNER_TEMPLATES, FinetuneSettings
from internlm_chain.workers import finetune_rows as rows

WORKERS = Path(__file__).resolve().parents[2] / "workers"
CURVE_POINTS = 200  # loss points kept in the manifest (loss.json has them all)


def _abs(ctx: StageContext, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (ctx.chain.base_dir / p).resolve()


class Sources:
    """Where the base model and the data come from, and whether they are ours to check now (a path that
    an earlier stage will produce may not exist yet during a dry-run)."""

    def __init__(self, ctx: StageContext):
        s: FinetuneSettings = ctx.settings
        produced = {a.path for a in ctx.inputs.values()}
        self.model: Path | None = None
        self.model_field = "model"
        self.model_checkable = True
        if s.model:
            self.model = _abs(ctx, s.model)
        elif "pretrain.model" in ctx.inputs:
            self.model, self.model_field = Path(ctx.inputs["pretrain.model"].path), "pretrain.outputs.model"
        elif ctx.chain.config.model.path:
            self.model, self.model_field = _abs(ctx, ctx.chain.config.model.path), "<chain>model.path"
        self.model_checkable = self.model is not None and str(self.model) not in produced

        # the data stage writes conversations and text, not preference pairs: those come from `data`
        key = {"sft": "data.sft", "continue": "data.xtuner"}.get(s.mode, "")
        self.data: Path | None = None
        self.data_field = "data"
        if s.data:
            self.data = _abs(ctx, s.data)
        elif key in ctx.inputs:
            self.data, self.data_field = Path(ctx.inputs[key].path), key.replace(".", ".outputs.")
        self.data_checkable = self.data is not None and str(self.data) not in produced
        self.replay = _abs(ctx, s.replay.data) if s.replay else None
        self.template = s.template or ctx.chain.config.model.chat_template
        ref = s.preference.reference_model
        self.reference = _abs(ctx, ref) if ref else None


class FinetuneStage(Stage):
    name = "finetune"
    runtime = "xtuner"
    needs = ("data", "pretrain")

    # ---- validate ------------------------------------------------------------------------------------
    def validate(self, ctx: StageContext) -> list[Problem]:
        s: FinetuneSettings = ctx.settings
        src = Sources(ctx)
        problems: list[Problem] = []

        def problem(field: str, msg: str, hint: str | None = None) -> None:
            if field.startswith("<chain>"):
                problems.append(ctx.chain.problem(field[len("<chain>"):], msg, hint))
            else:
                problems.append(ctx.problem(field, msg, hint))

        if s.deepspeed and s.deepspeed.endswith("_offload") and ctx.device == "cpu":
            problem("deepspeed", f"{s.deepspeed} moves optimizer state from the GPU to the CPU; this chain "
                    "already trains on cpu", f"use deepspeed: {s.deepspeed[:-len('_offload')]} on CPU")
        if s.method == "qlora" and ctx.device == "cpu":
            problem("method", "QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); this chain runs on cpu",
                    "use method: lora on CPU, or device: cuda on a GPU host")
        if src.template not in XTUNER_TEMPLATES:
            where = "template" if s.template else "<chain>model.chat_template"
            problem(where, f"'{src.template}' is not an XTuner prompt template",
                    "e.g. internlm2_chat, llama3_chat, qwen_chat")

        if src.model is None:
            problem("model", "no base model", "set stages.finetune.model or the chain's model.path")
        elif src.model_checkable:
            problems += self._check_model(src, s, problem)

        if src.data is None and s.preference_mode:
            problem("data", f"mode {s.mode} needs preference pairs", 'set stages.finetune.data to a JSONL of '
                    '{"prompt", "chosen", "rejected"} rows (docs/finetune.md)')
        elif src.data is None:
            want = "sft" if s.mode == "sft" else "xtuner"
            problem("data", "no training data", f"set stages.finetune.data, or add a data stage (its `{want}` "
                    "output is used)")
        elif src.data_checkable:
            if self._check_data(src.data, src.data_field, rows.row_kind(s.mode, s.data_format), s, problem):
                self._check_epoch_warmup(src.data, s, problem)
        if src.replay is not None:
            self._check_data(src.replay, "replay.data", "text", s, problem)
        if s.preference_mode:
            preference.validate(ctx, src, problem)
        problems += preference.downstream_problems(ctx)
        return problems

    @staticmethod
    def _check_model(src: Sources, s: FinetuneSettings, problem) -> list[Problem]:
        assert src.model is not None
        if not src.model.is_dir():
            problem(src.model_field, f"model directory not found: {src.model}",
                    "a Hugging Face model folder (config.json + weights)")
            return []
        config = src.model / "config.json"
        if not config.is_file():
            problem(src.model_field, f"{src.model} is not a Hugging Face model (no config.json)")
            return []
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            problem(src.model_field, f"{config} is not valid JSON ({exc})")
            return []
        limit = cfg.get("max_position_embeddings")
        if isinstance(limit, int) and s.max_length > limit:
            problem("max_length", f"{s.max_length} is longer than the model's context ({limit}, {config})",
                    f"use max_length <= {limit}")
        return []

    @staticmethod
    def _check_data(path: Path, field: str, kind: str, s: FinetuneSettings, problem) -> bool:
        """Whether the rows read fine (else a problem is reported)."""
        if not path.exists():
            problem(field, f"data not found: {path}")
            return False
        files = rows.data_files(path)
        if not files:
            problem(field, f"no .jsonl or .json files in {path}")
            return False
        if rows.count_rows(files) == 0:
            problem(field, f"{path} holds no rows")
            return False
        bad = rows.first_problem(files, kind)
        if bad:
            what = {"text": 'continued pre-training wants {"text": ...} rows',
                    "preference": f'mode {s.mode} wants {{"prompt": [messages ending with a user turn], '
                                  '"chosen": [assistant messages], "rejected": [assistant messages]} rows',
                    "openai": 'sft with data_format openai wants {"messages": [{"role", "content"}...]} rows',
                    "alpaca": 'sft with data_format alpaca wants {"instruction", "input", "output"} rows'}[kind]
            problem(field, bad, what)
        return not bad

    @staticmethod
    def _check_epoch_warmup(data: Path, s: FinetuneSettings, problem) -> None:
        """An epoch schedule's warm-up becomes int(warmup_ratio × epochs × iterations per epoch) iterations
        when mmengine builds it: 0 raises (`end should be larger than begin`) and 1 never leaves LinearLR's
        start factor (the chained cosine then decays from ~0, so nothing trains). Unpacked data gives at
        most one sample per row, so that is certain here when even ceil(rows / batch_size) iterations are too
        few; packed data can hold more samples than rows (long rows split), so it is checked after the fact
        (explain_failure)."""
        if s.max_steps is not None or not s.warmup_ratio or s.packed:
            return
        files = rows.data_files(data)
        n = rows.count_rows(files)
        if n == 0:
            return
        epochs = s.epochs or 1
        most = -(-n // s.batch_size)
        warmup = int(s.warmup_ratio * epochs * most)
        if warmup < 2:
            problem("warmup_ratio", f"an epoch of {n} rows in batches of {s.batch_size} is at most {most} "
                    f"iterations, so the warm-up is int({s.warmup_ratio:g} × {epochs} × {most}) = {warmup} "
                    "iteration(s): mmengine rejects 0, and 1 never reaches the full learning rate",
                    "set warmup_ratio: 0, or max_steps (an iteration schedule drops a warm-up under 2 "
                    "iterations)")

    # ---- plan ----------------------------------------------------------------------------------------
    def spec(self, ctx: StageContext) -> ConfigSpec:
        s: FinetuneSettings = ctx.settings
        src = Sources(ctx)
        data_files = rows.data_files(src.data) if src.data and src.data.exists() else [src.data]
        replay_files = rows.data_files(src.replay) if src.replay and src.replay.exists() else (
            [src.replay] if src.replay else [])
        return ConfigSpec(
            settings=s, device=ctx.device, model=str(src.model), template=src.template,
            data_files=tuple(str(f) for f in data_files), replay_files=tuple(str(f) for f in replay_files),
            data_rows=rows.count_rows([f for f in data_files if f and f.exists()]) if s.replay else 0,
            replay_rows=rows.count_rows([f for f in replay_files if f.exists()]) if s.replay else 0,
            reference_model=str(src.reference) if src.reference else None,
            reward_token_id=preference.reward_token_id(s, src.model) if s.mode == "reward" else None,
        )

    def _launcher(self, ctx: StageContext):
        from internlm_chain.launch.base import effective_settings

        return effective_settings(ctx.chain.config.launcher, ctx.settings.launcher)

    def plan(self, ctx: StageContext) -> list[Job]:
        s: FinetuneSettings = ctx.settings
        spec = self.spec(ctx)
        out = ctx.out_dir
        py = ctx.python(self.runtime)
        cfg = out / "xtuner_config.py"
        work = out / "work_dir"
        gpu = ctx.device == "cuda"
        launcher = self._launcher(ctx)
        env = {
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # datasets' cache of the tokenised data lives with the chain, not in ~/.cache
            "HF_DATASETS_CACHE": str(ctx.chain.workdir / ".cache" / "hf-datasets"),
        }
        if s.deepspeed:
            env["TORCH_EXTENSIONS_DIR"] = str(ctx.chain.workdir / ".cache" / "torch-extensions")
        one = Resources(gpus_per_node=1 if gpu else 0)

        def job(name: str, argv: list[str], description: str, **kw) -> Job:
            return Job(stage=self.name, name=name, argv=argv, cwd=str(out), env=kw.pop("env", dict(env)),
                       runtime=self.runtime,
                       description=description, resources=kw.pop("resources", one), **kw)

        jobs: list[Job] = []
        kind = rows.row_kind(s.mode, s.data_format)
        sources = [("data", spec.data_files)] + ([("replay", spec.replay_files)] if s.replay else [])
        for source, files in sources:
            check_cfg = out / "check" / f"{source}_config.py"
            jobs.append(job(
                f"check-{source}",
                [*py, str(WORKERS / "finetune_check.py"), "--config", str(check_cfg),
                 "--kind", "text" if source == "replay" else kind,
                 "--report", str(out / "check" / f"{source}.json"), *files],
                f"XTuner dataset check of the {source} ({kind if source == 'data' else 'text'} rows)",
                files={str(check_cfg): render_check_config(spec, source)},
                expected_outputs=[str(out / "check" / f"{source}.json")]))

        train = [*py, "-m", "xtuner.tools.train", str(cfg), "--work-dir", str(work)]
        train_files = {str(cfg): render_config(spec)}
        # mmengine 0.10.6 resumes with a bare torch.load; torch >= 2.6 then refuses its own checkpoints
        # (they pickle mmengine objects such as HistoryBuffer). They are ours, written by this job.
        train_env = {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        if s.deepspeed and gpu:
            train += ["--deepspeed", f"deepspeed_{s.deepspeed}"]  # XTuner's bundled ZeRO configs
        elif s.deepspeed:
            # XTuner's bundled configs say fp16 "auto", which it turns on whenever the device "is available"
            # (the CPU is), and DeepSpeed then refuses fp16 on CPU: the same ZeRO stage, in fp32.
            ds_cfg = out / f"deepspeed_{s.deepspeed}_cpu.json"
            train_files[str(ds_cfg)] = deepspeed_cpu_config(s.deepspeed)
            train += ["--deepspeed", str(ds_cfg)]
        if s.deepspeed and launcher.kind == "local":
            # One process, no torchrun: DeepSpeed would look for MPI (mpi4py) to learn its rank. Say it is
            # rank 0 of 1; port 0 lets the (unused) rendezvous store bind any free port.
            train_env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"})
        extra = {}
        if launcher.kind == "torchrun":
            train += ["--launcher", "pytorch"]
        elif launcher.kind == "slurm":
            # one Slurm task per process; mmengine reads SLURM_PROCID/NTASKS/… itself
            train += ["--launcher", "slurm"]
            extra = {"slurm_launch": "srun"} if "slurm_launch" in Job.model_fields else {}
        jobs.append(job(
            "train", train, f"XTuner {s.method} {s.mode} training (resumes from {work}/last_checkpoint)",
            files=train_files, distributed=True, env=train_env,
            resources=Resources(nodes=launcher.nnodes, gpus_per_node=launcher.nproc_per_node if gpu else 0),
            expected_outputs=[str(work / "last_checkpoint")], **extra))

        reward = s.mode == "reward"
        hf_dir = out / ("reward_model" if reward else "adapter" if s.adapter_method else "model")
        convert = [*py, str(WORKERS / "finetune_convert.py"), str(work), str(cfg), str(hf_dir),
                   "--safe-serialization"]
        if not gpu:
            convert.append("--fp32")  # trained in fp32 on CPU: keep it
        what = "reward model" if reward else "PEFT adapter" if s.adapter_method else "HF model"
        jobs.append(job("convert", convert, "pth_to_hf: last checkpoint → " + what,
                        expected_outputs=[str(hf_dir)]))
        model_dir = out / "model"
        if s.do_merge:
            jobs.append(job(
                "merge", [*py, "-m", "xtuner.tools.model_converters.merge", spec.model, str(out / "adapter"),
                          str(model_dir), "--safe-serialization"],
                "merge the adapter into the base model", expected_outputs=[str(model_dir)]))
        verify = [*py, str(WORKERS / "finetune_verify.py"), "--template", spec.template, "--work-dir", str(work),
                  "--out", str(out), "--max-new-tokens", str(s.verify_max_new_tokens)]
        if s.preference_mode:
            # trained on the tokenizer's own chat template (XTuner renders pairs with it): keep that one
            verify += ["--keep-template"]
        if reward:
            verify += ["--reward-model", str(hf_dir), "--reward-token-id", str(spec.reward_token_id),
                       "--pairs", *spec.data_files]
        elif s.adapter_method and not s.do_merge:
            verify += ["--model", spec.model, "--adapter", str(out / "adapter")]
        else:
            verify += ["--model", str(model_dir)]
        for prompt in s.evaluation_prompts[:3]:
            verify += ["--prompt", prompt]
        what = ("load the reward model, score pairs from the data" if reward else
                "load the result, generate a few tokens, " + ("keep the tokenizer's chat template"
                                                              if s.preference_mode else "set its chat template"))
        jobs.append(job("verify", verify, what + ", plot the loss",
                        expected_outputs=[str(out / "verify.json"), str(out / "loss.png")]))
        return jobs

    # ---- outputs -------------------------------------------------------------------------------------
    def _artifacts(self, ctx: StageContext, root: Path, checkpoint: Path) -> dict[str, Artifact]:
        s: FinetuneSettings = ctx.settings
        src = Sources(ctx)
        meta = {"method": s.method, "mode": s.mode}
        arts: dict[str, Artifact] = {
            "checkpoint": XTunerCheckpoint(path=str(checkpoint), chat_template=src.template,
                                           meta={**meta, "config": str(root / "xtuner_config.py")})}
        if s.mode == "reward":
            arts["reward_model"] = RewardModel(
                path=str(root / "reward_model"), chat_template=src.template,
                meta={**meta, "base_model": str(src.model),
                      "reward_token_id": preference.reward_token_id(s, src.model)})
            return arts
        if s.adapter_method:
            arts["adapter"] = Adapter(path=str(root / "adapter"), base_model=str(src.model),
                                      chat_template=src.template, meta=meta)
        if not s.adapter_method or s.do_merge:
            arts["model"] = HFModel(path=str(root / "model"), chat_template=src.template,
                                    meta={**meta, "base_model": str(src.model), "merged": s.do_merge})
        return arts

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        s: FinetuneSettings = ctx.settings
        last = s.max_steps if s.max_steps else "N"
        return self._artifacts(ctx, final_dir, final_dir / "work_dir" / f"iter_{last}.pth")

    def explain_failure(self, ctx: StageContext, result: JobResult) -> Problem | None:
        """A failed dataset check names the file, line and field (with XTuner's own message); an epoch
        warm-up too short for the data names `warmup_ratio`."""
        if result.job.name == "train":
            return self._explain_train(ctx, result)
        if not result.job.name.startswith("check-"):
            return None
        source = result.job.name[len("check-"):]
        report = ctx.out_dir / "check" / f"{source}.json"
        try:
            info = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        field = "replay.data" if source == "replay" else "data"
        where = info.get("row") or ", ".join(info.get("files", []))
        return ctx.problem(field, f"bad training data: {where}",
                           f"XTuner's dataset check: {info.get('xtuner', '?')}; log: {result.log}")

    @staticmethod
    def _explain_train(ctx: StageContext, result: JobResult) -> Problem | None:
        s: FinetuneSettings = ctx.settings
        if s.max_steps is not None or not s.warmup_ratio:
            return None
        try:
            with open(result.log, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 20000))
                tail = fh.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return None
        # mmengine converts the epoch warm-up to int(warmup_ratio × epochs × iterations per epoch)
        if "ValueError: end should be larger than begin, but got begin=0, end=0" not in tail:
            return None
        epochs = s.epochs or 1
        return ctx.problem("warmup_ratio", f"the data make fewer than {1 / (s.warmup_ratio * epochs):.0f} "
                           f"iterations per epoch, so a warm-up of warmup_ratio × epochs ({s.warmup_ratio:g} × "
                           f"{epochs}) is 0 iterations, which mmengine rejects",
                           f"set warmup_ratio: 0, or max_steps instead of epochs; log: {result.log}")

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        out = ctx.out_dir
        log = {r.job.name: r.log for r in results}

        def fail(msg: str, job: str) -> StageFailed:
            return StageFailed(Problem(f"finetune: {msg}", hint=f"log: {log.get(job)}"))

        from internlm_chain.workers.finetune_convert import latest_checkpoint

        checkpoint = latest_checkpoint(out / "work_dir")
        if checkpoint is None:
            raise fail("training left no checkpoint (work_dir/last_checkpoint)", "train")
        arts = self._artifacts(ctx, out, checkpoint)
        if "adapter" in arts:
            adapter = Path(arts["adapter"].path)
            if not (adapter / "adapter_config.json").is_file() or not list(adapter.glob("adapter_model.*")):
                raise fail(f"pth_to_hf wrote no PEFT adapter in {adapter}", "convert")
        if "reward_model" in arts:
            model = Path(arts["reward_model"].path)
            if not (model / "config.json").is_file() or not list(model.glob("*.safetensors")):
                raise fail(f"pth_to_hf wrote no reward model in {model}", "convert")
        if "model" in arts:
            model = Path(arts["model"].path)
            if not (model / "config.json").is_file() or not list(model.glob("*.safetensors")):
                raise fail(f"no safetensors model in {model}", "merge" if "adapter" in arts else "convert")
        try:
            verify = json.loads((out / "verify.json").read_text(encoding="utf-8"))
            losses = json.loads((out / "loss.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise fail(f"the final check wrote no result ({exc})", "verify") from None
        points = losses["points"]
        if not points or not (out / "loss.png").is_file():
            raise fail("no loss curve", "verify")
        step = max(1, len(points) // CURVE_POINTS)
        template = verify.get("chat_template", {})
        ctx.metrics.update({
            "final_loss": points[-1][1],
            "first_loss": points[0][1],
            "steps": int(points[-1][0]),
            "loss_curve": points[::step] if points[-1] in points[::step] else [*points[::step], points[-1]],
            "resumed_from": [Path(p).name for p in losses.get("resumed_from", [])],
            "samples": [{"prompt": x["prompt"], "text": x["text"]} for x in verify.get("samples", [])],
            "chat_template": {k: template[k] for k in ("name", "kept_existing", "matches_xtuner_template")
                              if k in template},
        })
        if ctx.settings.preference_mode:
            ctx.metrics.update(preference.metrics(losses, verify))
            if not preference.finite(ctx.metrics):
                raise fail(f"training diverged: non-finite loss or reward ({ctx.metrics['final_loss']})", "train")
        return arts


STAGE = FinetuneStage()
