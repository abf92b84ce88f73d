"""`stages.finetune`: XTuner fine-tuning (SFT, continued pre-training, DPO, ORPO or a reward model; full,
LoRA or QLoRA)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from internlm_chain.config.base import StageSettings, StrictModel

# XTuner 0.2.0's PROMPT_TEMPLATE names (xtuner/utils/templates.py); checked here so a typo fails at load
# time instead of inside the runtime.
XTUNER_TEMPLATES = (
    "default", "zephyr", "internlm_chat", "internlm2_chat", "moss_sft", "llama2_chat", "code_llama_chat",
    "chatglm2", "chatglm3", "qwen_chat", "baichuan_chat", "baichuan2_chat", "wizardlm", "wizardcoder",
    "vicuna", "deepseek_coder", "deepseekcoder", "deepseek_moe", "deepseek_v2", "mistral", "mixtral",
    "minicpm", "minicpm3", "gemma", "cohere_chat", "llama3_chat", "phi3_chat",
)

DeepSpeed = Literal["zero1", "zero2", "zero3", "zero2_offload", "zero3_offload"]
PREFERENCE_MODES = ("dpo", "orpo", "reward")
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "kto_pair", "sppo_hard", "nca_pair", "robust")  # xtuner/model/dpo.py
# Reward-token ids XTuner's own reward configs use: a reserved token the chats never contain.
DEFAULT_REWARD_TOKENS = {"internlm2": 92527}  # [UNUSED_TOKEN_130]


class LoraSettings(StrictModel):
    r: int = Field(64, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt (e.g. [wqkv, wo]); default: every linear layer but the head.")


class ReplaySettings(StrictModel):
    """Earlier data mixed into continued pre-training so the model keeps what it knew."""

    data: str = Field(description='JSONL file (or folder of them) of {"text": ...} rows from earlier training.')
    ratio: float = Field(0.1, gt=0.0, lt=1.0, description="Share of the training rows drawn from `data`.")


class PreferenceSettings(StrictModel):
    """Settings of the preference modes (dpo, orpo, reward); each field says which mode reads it."""

    beta: float = Field(0.1, gt=0.0, description="dpo: strength of the pull towards the reference model (β); "
                                                 "orpo: weight of the odds-ratio term (λ).")
    loss_type: Literal["sigmoid", "hinge", "ipo", "kto_pair", "sppo_hard", "nca_pair", "robust"] = Field(
        "sigmoid", description="dpo: loss variant (sigmoid = the DPO paper's).")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="dpo: conservative-DPO label smoothing "
                                                                     "(loss_type sigmoid or robust).")
    reference_model: str | None = Field(
        None, description="dpo: frozen reference model directory. Default: the base model itself (LoRA: the "
                          "base weights with the adapter switched off; full: a frozen copy).")
    reward_token_id: int | None = Field(
        None, ge=0, description="reward: id of the token appended to every conversation whose score is read "
                                "(a token the chats never use). Default: 92527 for InternLM2, else required.")
    reward_loss: Literal["ranking", "focal"] = Field(
        "focal", description="reward: ranking (Bradley-Terry) or focal ranking loss (InternLM2 paper).")
    penalty: Literal["log_barrier", "L2", "none"] = Field(
        "log_barrier", description="reward: penalty keeping scores in range.")
    penalty_weight: float = Field(0.01, ge=0.0, description="reward: weight of the penalty.")


class FinetuneSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("checkpoint", "adapter", "model", "reward_model")

    model: str | None = Field(
        None, description="Base HF model directory. Default: the pretrain stage's model when that stage is "
                          "in the chain, else the chain's `model.path`.")
    data: str | None = Field(
        None, description="Training data: a .jsonl/.json file or a folder of them. Default: the data stage's "
                          "`sft` output (mode sft) or `xtuner` output (mode continue).")
    method: Literal["full", "lora", "qlora"] = Field("lora", description="Which weights train.")
    mode: Literal["sft", "continue", "dpo", "orpo", "reward"] = Field(
        "sft", description="sft: conversations (OpenAI messages or alpaca rows); continue: continued "
                           'pre-training on {"text": ...} rows; dpo / orpo: preference training and reward: '
                           'a reward model, all three on {"prompt", "chosen", "rejected"} rows (see '
                           "docs/finetune.md).")
    template: str | None = Field(None, description="XTuner prompt template name; default: chain model.chat_template.")
    data_format: Literal["openai", "alpaca"] = Field("openai", description="Row format for mode sft.")
    system: str = Field("", description="System prompt used by the evaluation hook.")
    max_length: int = Field(2048, ge=16, description="Tokens per training sequence.")
    pack_to_max_length: bool | None = Field(
        None, description="Pack several samples into each sequence (default: true for sft/continue; "
                          "preference pairs are never packed, see docs/finetune.md).")
    batch_size: int = Field(1, ge=1, description="Sequences per device per step.")
    accumulative_counts: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(2e-4, gt=0.0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Share of the schedule spent warming up.")
    max_steps: int | None = Field(None, ge=1, description="Train this many iterations (overrides epochs).")
    epochs: int | None = Field(None, ge=1, description="Train this many epochs (default 1 when max_steps unset).")
    save_interval: int = Field(500, ge=1, description="Save a checkpoint every N iterations.")
    save_total_limit: int = Field(2, ge=-1, description="Checkpoints to keep (-1: all).")
    log_interval: int = Field(10, ge=1, description="Log the loss every N iterations.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    deepspeed: DeepSpeed | None = Field(None, description="DeepSpeed ZeRO config (XTuner's bundled ones).")
    seed: int = Field(0, description="Random seed.")
    evaluation_prompts: list[str] = Field(
        default_factory=list, description="Prompts answered during training and by the final check.")
    evaluation_interval: int = Field(500, ge=1, description="Run the evaluation prompts every N iterations.")
    evaluation_max_new_tokens: int = Field(600, ge=1, description="Tokens generated per evaluation prompt.")
    replay: ReplaySettings | None = Field(None, description="Mix earlier data into continued pre-training.")
    preference: PreferenceSettings = Field(default_factory=PreferenceSettings,
                                           description="Settings of modes dpo, orpo and reward.")
    merge: bool | None = Field(None, description="Merge the adapter into the base model (default: true for "
                                                 "lora/qlora).")
    dataloader_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    map_num_proc: int | None = Field(None, ge=1, description="Processes for dataset mapping (default: 1 on "
                                                             "cpu, 8 on cuda).")
    verify_max_new_tokens: int = Field(8, ge=1, description="Tokens generated by the final load-and-generate check.")

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneSettings:
        if self.template is not None and self.template not in XTUNER_TEMPLATES:
            import difflib

            close = difflib.get_close_matches(self.template, XTUNER_TEMPLATES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "one of " + ", ".join(XTUNER_TEMPLATES)
            raise ValueError(f"template '{self.template}' is not an XTuner prompt template ({hint})")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("set max_steps or epochs, not both")
        if self.method == "full" and self.merge:
            raise ValueError("merge applies to lora/qlora only (full fine-tuning already yields a whole model)")
        if self.replay is not None and self.mode != "continue":
            raise ValueError("replay mixes earlier pre-training text and needs mode: continue")
        self._check_preference()
        return self

    def _check_preference(self) -> None:
        mode, given = self.mode, self.preference.model_fields_set
        readers = {"beta": ("dpo", "orpo"), "loss_type": ("dpo",), "label_smoothing": ("dpo",),
                   "reference_model": ("dpo",), "reward_token_id": ("reward",), "reward_loss": ("reward",),
                   "penalty": ("reward",), "penalty_weight": ("reward",)}
        for name in sorted(given):
            if mode not in readers[name]:
                raise ValueError(f"preference.{name} is read by mode {' / '.join(readers[name])} only "
                                 f"(this is mode {mode})")
        if mode not in PREFERENCE_MODES:
            return
        # Pairs are packed only with XTuner's varlen attention, which needs flash-attn (not in the runtimes).
        if self.pack_to_max_length:
            raise ValueError(f"mode {mode} trains on whole preference pairs: packing them needs varlen "
                             "attention (flash-attn), which the xtuner runtime does not ship; remove "
                             "pack_to_max_length")
        if self.data_format != "openai":
            raise ValueError(f'mode {mode} reads {{"prompt", "chosen", "rejected"}} rows; data_format applies '
                             "to mode sft only")
        if self.preference.label_smoothing and self.preference.loss_type not in ("sigmoid", "robust"):
            raise ValueError("preference.label_smoothing applies to loss_type sigmoid or robust only")
        if mode == "reward":
            if self.method != "full":
                # XTuner 0.2.0's RewardModel.state_dict keeps only the LoRA weights when LoRA is on, so the
                # value head never reaches the checkpoint and the converted model scores every reply 0.
                raise ValueError("mode reward needs method: full (XTuner 0.2.0 drops the reward head from "
                                 "LoRA checkpoints)")
            if self.evaluation_prompts:
                raise ValueError("evaluation_prompts: a reward model scores replies, it does not generate them")

    @property
    def preference_mode(self) -> bool:
        return self.mode in PREFERENCE_MODES

    @property
    def packed(self) -> bool:
        return self.pack_to_max_length if self.pack_to_max_length is not None else not self.preference_mode

    @property
    def adapter_method(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def do_merge(self) -> bool:
        return self.adapter_method and self.merge is not False and self.mode != "reward"
