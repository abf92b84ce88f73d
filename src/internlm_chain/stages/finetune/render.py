"""Render XTuner 0.2.0 python configs (mmengine lazy-import style) from `stages.finetune` settings.

Pure string building: the same `ConfigSpec` always gives the same text, so configs are golden-tested.
The CPU variant follows UPSTREAM-FACTS.md: no AMP wrapper, fp32, a `torch.cpu.is_bf16_supported`
probe (XTuner's flash-attention check calls it), gloo and one mapping process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from internlm_chain.stages.finetune.settings import FinetuneSettings

XTUNER_VERSION = "0.2.0"
WARMUP_START_FACTOR = 1e-5
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "finetune"


@dataclass(frozen=True)
class ConfigSpec:
    settings: FinetuneSettings
    device: str  # cpu | cuda
    model: str  # absolute path of the base HF model
    template: str  # XTuner prompt template name
    data_files: tuple[str, ...]
    replay_files: tuple[str, ...] = ()
    data_rows: int = 0  # rows in data_files (decides how many replay rows make up `replay.ratio`)
    replay_rows: int = 0
    reference_model: str | None = None  # dpo: absolute path of an explicit reference model
    reward_token_id: int | None = None  # reward: resolved token id

    @property
    def map_num_proc(self) -> int:
        s = self.settings
        return s.map_num_proc or (1 if self.device == "cpu" else 8)


@dataclass
class _Imports:
    lines: dict[str, list[str]] = field(default_factory=dict)

    def add(self, module: str, *names: str) -> None:
        bucket = self.lines.setdefault(module, [])
        bucket.extend(n for n in names if n not in bucket)

    def render(self) -> str:
        out = []
        for module in sorted(self.lines, key=lambda m: (m.split(".")[0] == "xtuner", m)):
            names = sorted(self.lines[module])
            if names == ["*module*"]:
                out.append(f"import {module}")
            else:
                out.append(f"from {module} import {', '.join(names)}")
        return "\n".join(out)


def _q(value) -> str:
    """A Python literal for the config (repr is exact for str/int/float/bool/None/lists of them)."""
    return repr(value)


def replay_plan(data_rows: int, replay_rows: int, ratio: float) -> tuple[int, int]:
    """(full copies of the replay data, rows sampled for one more partial copy) so that replay rows make
    up `ratio` of all training rows: replay = ratio / (1 - ratio) × new rows, at least one row."""
    if replay_rows <= 0:
        return 0, 0
    wanted = max(1, math.ceil(ratio / (1.0 - ratio) * data_rows - 1e-9))
    return wanted // replay_rows, wanted % replay_rows


def replay_row_count(spec: ConfigSpec) -> int:
    s = spec.settings
    if s.replay is None:
        return 0
    full, partial = replay_plan(spec.data_rows, spec.replay_rows, s.replay.ratio)
    return full * spec.replay_rows + partial


def _map_fn(settings: FinetuneSettings) -> str:
    if settings.mode == "continue":
        return "pretrain_map_fn"
    return "openai_map_fn" if settings.data_format == "openai" else "alpaca_map_fn"


def _dataset_dict(var: str, files_var: str, map_fn: str, sft: bool, max_rows: int | None = None) -> str:
    template_map = "dict(type=template_map_fn_factory, template=prompt_template)" if sft else "None"
    rows = f"\n    max_dataset_length={max_rows}," if max_rows is not None else ""
    # Pre-training text keeps its order inside a packed sequence; conversations are shuffled first.
    return (
        f"{var} = dict(\n"
        f"    type=process_hf_dataset,\n"
        f"    dataset=dict(type=load_dataset, path=\"json\", data_files={files_var}),\n"
        f"    tokenizer=tokenizer,\n"
        f"    max_length=max_length,\n"
        f"    dataset_map_fn={map_fn},\n"
        f"    template_map_fn={template_map},\n"
        f"    remove_unused_columns=True,\n"
        f"    shuffle_before_pack={sft},\n"
        f"    pack_to_max_length=pack_to_max_length,\n"
        f"    use_varlen_attn=use_varlen_attn,\n"
        f"    map_num_proc=map_num_proc,{rows}\n"
        f")\n"
    )


def _preference_dataset(spec: ConfigSpec, imports: _Imports) -> str:
    s = spec.settings
    reward = s.mode == "reward"
    imports.add("xtuner.dataset.preference_dataset", "build_preference_dataset")
    # Pairs are rendered with the tokenizer's own chat template (XTuner's tokenize()), each of chosen and
    # rejected cut at max_length; unpacked, so a batch holds whole pairs padded to the longest.
    return (
        "train_dataset = dict(\n"
        "    type=build_preference_dataset,\n"
        "    dataset=dict(type=load_dataset, path=\"json\", data_files=data_files),\n"
        "    tokenizer=tokenizer,\n"
        "    max_length=max_length,\n"
        "    dataset_map_fn=None,\n"
        f"    is_dpo={not reward},\n"
        f"    is_reward={reward},\n"
        f"    reward_token_id={'reward_token_id' if reward else -1},\n"
        "    num_proc=map_num_proc,\n"
        "    use_varlen_attn=use_varlen_attn,\n"
        "    shuffle_before_pack=True,\n"
        ")\n"
    )


def _dataset_block(spec: ConfigSpec, imports: _Imports) -> str:
    s = spec.settings
    if s.preference_mode:
        return f"data_files = {_q(list(spec.data_files))}\n" + _preference_dataset(spec, imports)
    sft = s.mode == "sft"
    map_fn = _map_fn(s)
    imports.add("xtuner.dataset", "process_hf_dataset")
    imports.add("xtuner.dataset.map_fns", map_fn)
    if sft:
        imports.add("xtuner.dataset.map_fns", "template_map_fn_factory")
    text = f"data_files = {_q(list(spec.data_files))}\n"
    if s.replay is None:
        return text + _dataset_dict("train_dataset", "data_files", map_fn, sft)
    imports.add("xtuner.dataset", "ConcatDataset")
    full, partial = replay_plan(spec.data_rows, spec.replay_rows, s.replay.ratio)
    text += (
        f"# Replay: {s.replay.ratio:g} of the training rows come from earlier data "
        f"({spec.data_rows} new rows → {full * spec.replay_rows + partial} replay rows "
        f"= {full} full pass(es) over {spec.replay_rows} + {partial} sampled).\n"
        f"replay_data_files = {_q(list(spec.replay_files))}\n"
    )
    text += _dataset_dict("new_dataset", "data_files", map_fn, sft) + "\n"
    parts = ["new_dataset"]
    if full:
        text += _dataset_dict("replay_dataset", "replay_data_files", map_fn, sft) + "\n"
        parts += ["replay_dataset"] * full
    if partial:
        text += _dataset_dict("replay_sample", "replay_data_files", map_fn, sft, max_rows=partial) + "\n"
        parts.append("replay_sample")
    return text + f"train_dataset = dict(type=ConcatDataset, datasets=[{', '.join(parts)}])\n"


MODEL_CLASSES = {"sft": ("xtuner.model", "SupervisedFinetune"), "continue": ("xtuner.model", "SupervisedFinetune"),
                 "dpo": ("xtuner.model.dpo", "DPO"), "orpo": ("xtuner.model.orpo", "ORPO"),
                 "reward": ("xtuner.model.reward", "RewardModel")}


def _mode_lines(spec: ConfigSpec) -> list[str]:
    """The model's own arguments in a preference mode (their values sit in PART 1)."""
    mode = spec.settings.mode
    if mode == "dpo":
        return ["    loss_type=dpo_loss_type,", "    beta=loss_beta,", "    label_smoothing=label_smoothing,"]
    if mode == "orpo":
        return ["    beta=loss_beta,"]
    if mode == "reward":
        return ["    loss_type=reward_loss_type,", "    penalty_type=penalty_type,",
                "    penalty_weight=penalty_weight,", "    reward_token_id=reward_token_id,"]
    return []


def _reference_lines(spec: ConfigSpec, gpu: bool) -> list[str]:
    """DPO's frozen reference as its own model config. Without one XTuner uses the base weights with the
    adapter off (LoRA) or a deep copy of the policy (full), which ZeRO-3 cannot do, so full + ZeRO-3 gets
    the base model loaded a second time."""
    s = spec.settings
    zero3 = bool(s.deepspeed and s.deepspeed.startswith("zero3"))
    if s.mode != "dpo" or not (spec.reference_model or (s.method == "full" and zero3)):
        return []
    path = "reference_model_name_or_path" if spec.reference_model else "pretrained_model_name_or_path"
    lines = ["    ref_llm=dict(", "        type=AutoModelForCausalLM.from_pretrained,",
             f"        pretrained_model_name_or_path={path},", "        trust_remote_code=True,"]
    if gpu:
        lines.append("        torch_dtype=torch.bfloat16,")
    return lines + ["    ),"]


def _model_block(spec: ConfigSpec, imports: _Imports) -> str:
    s = spec.settings
    gpu = spec.device == "cuda"
    llm = [
        "        type=AutoModelForCausalLM.from_pretrained,",
        "        pretrained_model_name_or_path=pretrained_model_name_or_path,",
        "        trust_remote_code=True,",
    ]
    reference = _reference_lines(spec, gpu)
    if gpu and (s.adapter_method or reference):
        imports.add("torch", "*module*")
    if gpu and s.adapter_method:
        llm.append("        torch_dtype=torch.bfloat16,")
    if s.method == "qlora":
        imports.add("transformers", "BitsAndBytesConfig")
        llm += [
            "        quantization_config=dict(",
            "            type=BitsAndBytesConfig,",
            "            load_in_4bit=True,",
            "            load_in_8bit=False,",
            "            llm_int8_threshold=6.0,",
            "            llm_int8_has_fp16_weight=False,",
            "            bnb_4bit_compute_dtype=torch.bfloat16,",
            "            bnb_4bit_use_double_quant=True,",
            "            bnb_4bit_quant_type=\"nf4\",",
            "        ),",
        ]
    module, cls = MODEL_CLASSES[s.mode]
    imports.add(module, cls)
    lines = ["model = dict(", f"    type={cls},", "    use_varlen_attn=use_varlen_attn,", *_mode_lines(spec),
             "    llm=dict(", *llm, "    ),", *reference]
    if s.adapter_method:
        imports.add("peft", "LoraConfig")
        lora = s.lora
        lines += [
            "    lora=dict(",
            "        type=LoraConfig,",
            f"        r={lora.r},",
            f"        lora_alpha={lora.alpha},",
            f"        lora_dropout={lora.dropout!r},",
        ]
        if lora.target_modules:
            lines.append(f"        target_modules={_q(list(lora.target_modules))},")
        lines += ["        bias=\"none\",", "        task_type=\"CAUSAL_LM\",", "    ),"]
    lines.append(")")
    return "\n".join(lines) + "\n"


def _optim_block(spec: ConfigSpec, imports: _Imports) -> str:
    common = (
        "    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),\n"
        "    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),\n"
        "    accumulative_counts=accumulative_counts,\n"
    )
    if spec.device == "cpu":
        imports.add("mmengine.optim", "OptimWrapper")
        return "# CPU: plain fp32 steps (AmpOptimWrapper needs CUDA).\noptim_wrapper = dict(\n" \
               "    type=OptimWrapper,\n" + common + ")\n"
    imports.add("mmengine.optim", "AmpOptimWrapper")
    return "optim_wrapper = dict(\n    type=AmpOptimWrapper,\n" + common + \
        "    loss_scale=\"dynamic\",\n    dtype=\"bfloat16\",\n)\n"


def _schedule(spec: ConfigSpec, imports: _Imports) -> tuple[str, str]:
    """(length settings, scheduler + train loop). Steps: iteration-based; epochs: XTuner's epoch form."""
    s = spec.settings
    imports.add("mmengine.optim", "CosineAnnealingLR")
    imports.add("xtuner.engine.runner", "TrainLoop")
    if s.max_steps is not None:
        warmup = int(round(s.warmup_ratio * s.max_steps))
        # mmengine's LinearLR reaches the full lr on its last iteration (end - 1); a one-iteration warm-up
        # would never leave start_factor, and the (chained) cosine would decay from there.
        warmup = warmup if warmup >= 2 else 0
        length = f"max_iters = {s.max_steps}\nwarmup_iters = {warmup}  # round(warmup_ratio * max_iters); < 2: none\n"
        scheds = []
        if warmup:
            imports.add("mmengine.optim", "LinearLR")
            scheds.append(f"    dict(type=LinearLR, start_factor={WARMUP_START_FACTOR!r}, by_epoch=False, "
                          "begin=0, end=warmup_iters),")
        scheds.append("    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=False, begin=warmup_iters, "
                      "end=max_iters),")
        loop = "train_cfg = dict(type=TrainLoop, max_iters=max_iters)\n"
    else:
        epochs = s.epochs or 1
        length = f"max_epochs = {epochs}\n"
        scheds = []
        if s.warmup_ratio:
            imports.add("mmengine.optim", "LinearLR")
            scheds.append(f"    dict(type=LinearLR, start_factor={WARMUP_START_FACTOR!r}, by_epoch=True, begin=0, "
                          "end=warmup_ratio * max_epochs, convert_to_iter_based=True),")
        begin = "warmup_ratio * max_epochs" if s.warmup_ratio else "0"
        scheds.append(f"    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True, begin={begin}, "
                      "end=max_epochs, convert_to_iter_based=True),")
        loop = "train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)\n"
    return length, "param_scheduler = [\n" + "\n".join(scheds) + "\n]\n\n" + loop


def _hooks(spec: ConfigSpec, imports: _Imports) -> str:
    s = spec.settings
    imports.add("xtuner.engine.hooks", "DatasetInfoHook")
    hooks = "    dict(type=DatasetInfoHook, tokenizer=tokenizer),\n"
    if s.evaluation_prompts:
        imports.add("xtuner.engine.hooks", "EvaluateChatHook")
        template = "\n        prompt_template=prompt_template," if s.mode in ("sft", "dpo", "orpo") else ""
        hooks += (
            "    dict(\n"
            "        type=EvaluateChatHook,\n"
            "        tokenizer=tokenizer,\n"
            "        every_n_iters=evaluation_freq,\n"
            "        evaluation_inputs=evaluation_inputs,\n"
            f"        system=SYSTEM,{template}\n"
            f"        max_new_tokens={s.evaluation_max_new_tokens},\n"
            "    ),\n"
        )
    return hooks


def _base_imports(imports: _Imports) -> None:
    imports.add("datasets", "load_dataset")
    imports.add("mmengine.dataset", "DefaultSampler")
    imports.add("mmengine.hooks", "CheckpointHook", "DistSamplerSeedHook", "IterTimerHook", "LoggerHook",
                "ParamSchedulerHook")
    imports.add("torch.optim", "AdamW")
    imports.add("transformers", "AutoModelForCausalLM", "AutoTokenizer")



def _prelude(spec: ConfigSpec) -> str:
    if spec.device != "cpu":
        return ""
    return (
        "\n# CPU: XTuner asks the device namespace `torch.cpu` whether bf16 is supported, which torch does not\n"
        "# define; answering no keeps the model in fp32.\n"
        "__import__(\"torch\").cpu.is_bf16_supported = lambda: False\n"
    )


def _template_line(spec: ConfigSpec, imports: _Imports) -> str:
    if spec.settings.mode == "reward":
        return f"None  # a reward model generates nothing (chat template of the model: {spec.template})"
    if spec.settings.mode not in ("sft", "dpo", "orpo"):
        return f"None  # continued pre-training on plain text (chat template of the model: {spec.template})"
    imports.add("xtuner.utils", "PROMPT_TEMPLATE")
    return f"PROMPT_TEMPLATE.{spec.template}"


def _collate(spec: ConfigSpec, imports: _Imports) -> str:
    if spec.settings.preference_mode:
        imports.add("xtuner.dataset.collate_fns.preference_collate_fn", "preference_collate_fn")
        return "preference_collate_fn"
    imports.add("xtuner.dataset.collate_fns", "default_collate_fn")
    return "default_collate_fn"


def _mode_settings(spec: ConfigSpec) -> str:
    """PART 1 lines of a preference mode: the loss and, for DPO, the reference model."""
    s, p = spec.settings, spec.settings.preference
    if s.mode == "dpo":
        ref = ("reference_model_name_or_path = " + _q(spec.reference_model)) if spec.reference_model else (
            "# reference: " + ("the base weights with the LoRA adapter switched off" if s.adapter_method
                               else "a frozen copy of the base model"))
        return (f"\n# DPO\ndpo_loss_type = {_q(p.loss_type)}\nloss_beta = {_q(p.beta)}\n"
                f"label_smoothing = {_q(p.label_smoothing)}\n{ref}\n")
    if s.mode == "orpo":
        return f"\n# ORPO: loss = NLL(chosen) - loss_beta * log-sigmoid(log odds ratio)\nloss_beta = {_q(p.beta)}\n"
    if s.mode == "reward":
        return (f"\n# Reward model: the score is read at reward_token_id, appended to every conversation\n"
                f"reward_token_id = {spec.reward_token_id}\nreward_loss_type = {_q(p.reward_loss)}\n"
                f"penalty_type = {_q(p.penalty)}\npenalty_weight = {_q(p.penalty_weight)}\n")
    return ""


def _summary(spec: ConfigSpec) -> str:
    s = spec.settings
    parts = [s.method, s.mode, spec.device]
    if s.deepspeed:
        parts.append(f"deepspeed {s.deepspeed} (passed on the command line)")
    if s.replay:
        parts.append(f"replay {s.replay.ratio:g}")
    return ", ".join(parts)


def _template_text() -> str:
    return (TEMPLATES / "xtuner_config.py.tmpl").read_text(encoding="utf-8")


def render_config(spec: ConfigSpec) -> str:
    """The training config XTuner's `train`, `pth_to_hf` and the dataset check load."""
    s = spec.settings
    imports = _Imports()
    _base_imports(imports)
    prompt_template = _template_line(spec, imports)
    model_block = _model_block(spec, imports)
    dataset_block = _dataset_block(spec, imports)
    optim_block = _optim_block(spec, imports)
    length, schedule_block = _schedule(spec, imports)
    custom_hooks = _hooks(spec, imports)
    collate_fn = _collate(spec, imports)
    return Template(_template_text()).substitute(
        mode_settings=_mode_settings(spec),
        collate_fn=collate_fn,
        xtuner_version=XTUNER_VERSION,
        summary=_summary(spec),
        imports=imports.render(),
        device_prelude=_prelude(spec),
        model_path=_q(spec.model),
        prompt_template=prompt_template,
        max_length=s.max_length,
        pack_to_max_length=s.packed,
        batch_size=s.batch_size,
        accumulative_counts=s.accumulative_counts,
        dataloader_workers=s.dataloader_workers,
        map_num_proc=spec.map_num_proc,
        lr=_q(s.lr),
        weight_decay=_q(s.weight_decay),
        max_norm=_q(s.max_norm),
        warmup_ratio=_q(s.warmup_ratio),
        length_settings=length,
        save_steps=s.save_interval,
        save_total_limit=s.save_total_limit,
        evaluation_freq=s.evaluation_interval,
        system=_q(s.system),
        evaluation_inputs=_q(list(s.evaluation_prompts)),
        model_block=model_block,
        dataset_block=dataset_block,
        optim_block=optim_block,
        schedule_block=schedule_block,
        custom_hooks=custom_hooks,
        log_interval=s.log_interval,
        dist_backend=_q("gloo" if spec.device == "cpu" else "nccl"),
        seed=s.seed,
    )


def deepspeed_cpu_config(name: str) -> str:
    """XTuner's bundled ZeRO stage `name` (zero1/2/3) with fp16 and bf16 off, for `--deepspeed FILE` on CPU."""
    import json

    zero: dict = {"stage": int(name[len("zero")]), "overlap_comm": True}
    if zero["stage"] == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return json.dumps({
        "gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False, "zero_optimization": zero,
        "fp16": {"enabled": False}, "bf16": {"enabled": False},
    }, indent=2) + "\n"


def render_check_config(spec: ConfigSpec, source: str) -> str:
    """A config holding one data source (`data` or `replay`) for `xtuner.tools.check_custom_dataset`,
    which inspects `train_dataloader.dataset.dataset` and so cannot look inside a ConcatDataset (preference
    data: for finetune_pairs.py, which builds the same preference dataset as training)."""
    s = spec.settings
    files = spec.data_files if source == "data" else spec.replay_files
    imports = _Imports()
    imports.add("datasets", "load_dataset")
    imports.add("transformers", "AutoTokenizer")
    prompt_template = _template_line(spec, imports)
    if s.preference_mode:
        dataset = _preference_dataset(spec, imports)
        mode_settings = f"reward_token_id = {spec.reward_token_id}\n" if s.mode == "reward" else ""
    else:
        imports.add("xtuner.dataset", "process_hf_dataset")
        map_fn = _map_fn(s)
        imports.add("xtuner.dataset.map_fns", map_fn)
        if s.mode == "sft":
            imports.add("xtuner.dataset.map_fns", "template_map_fn_factory")
        dataset = _dataset_dict("train_dataset", "data_files", map_fn, s.mode == "sft")
        mode_settings = ""
    return (
        f"# Dataset check for the finetune stage's {source} ({_summary(spec)}); rendered by internlm-chain.\n"
        f"{imports.render()}\n{_prelude(spec)}\n"
        f"pretrained_model_name_or_path = {_q(spec.model)}\n"
        "use_varlen_attn = False\n"
        f"prompt_template = {prompt_template}\n"
        f"max_length = {s.max_length}\n"
        f"pack_to_max_length = {s.packed}\n"
        f"map_num_proc = {spec.map_num_proc}\n"
        f"{mode_settings}"
        f"data_files = {_q(list(files))}\n\n"
        "tokenizer = dict(\n"
        "    type=AutoTokenizer.from_pretrained,\n"
        "    pretrained_model_name_or_path=pretrained_model_name_or_path,\n"
        "    trust_remote_code=True,\n"
        "    padding_side=\"right\",\n"
        ")\n\n"
        + dataset
        + "\ntrain_dataloader = dict(dataset=train_dataset)\n"
    )
