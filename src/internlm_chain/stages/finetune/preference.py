"""What the preference modes (dpo, orpo, reward) add to the finetune stage: checks of the base model and of
the stages that would consume the result, the reward token, and the metrics XTuner logs for them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from internlm_chain.errors import Problem
from internlm_chain.stages.finetune.settings import DEFAULT_REWARD_TOKENS, FinetuneSettings

if TYPE_CHECKING:
    from internlm_chain.stages.base import StageContext

# scalars XTuner logs per iteration besides `loss` (xtuner/model/dpo.py, orpo.py, reward.py)
SCALARS = {
    "dpo": ("reward_acc", "reward_margin", "chosen_rewards", "rejected_rewards"),
    "orpo": ("reward_acc", "reward_margin", "nll_loss", "log_odds_ratio", "chosen_rewards", "rejected_rewards"),
    "reward": ("acc", "chosen_score_mean", "rejected_score_mean"),
}


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def has_chat_template(model: Path) -> bool:
    cfg = _json(model / "tokenizer_config.json") or {}
    return bool(cfg.get("chat_template")) or (model / "chat_template.jinja").is_file() or \
        (model / "chat_template.json").is_file()


def reward_token_id(s: FinetuneSettings, model: Path | None) -> int | None:
    if s.preference.reward_token_id is not None:
        return s.preference.reward_token_id
    cfg = _json(model / "config.json") if model else None
    return DEFAULT_REWARD_TOKENS.get((cfg or {}).get("model_type", ""))


def validate(ctx: StageContext, src, problem) -> None:
    """Checks of a preference mode that need the files (the settings model checked the rest)."""
    s: FinetuneSettings = ctx.settings
    if src.model is not None and src.model_checkable and (src.model / "config.json").is_file():
        if not has_chat_template(src.model):
            problem(src.model_field, f"mode {s.mode} renders the pairs with the tokenizer's own chat template "
                    f"(XTuner's build_preference_dataset), and {src.model} has none",
                    "add a `chat_template` to its tokenizer_config.json (the one the model was trained with)")
        if s.mode == "reward":
            _check_reward_token(s, src, problem)
    elif s.mode == "reward" and s.preference.reward_token_id is None:
        problem("preference.reward_token_id", "the base model is not there yet, so its reward token is unknown",
                "set preference.reward_token_id: a token id the conversations never contain")
    if src.reference is not None:
        if not (src.reference / "config.json").is_file():
            problem("preference.reference_model", f"{src.reference} is not a Hugging Face model (no config.json)",
                    "a model directory, e.g. the SFT model the policy starts from; or leave it unset")


def _check_reward_token(s: FinetuneSettings, src, problem) -> None:
    cfg = _json(src.model / "config.json") or {}
    token = reward_token_id(s, src.model)
    field = "preference.reward_token_id"
    if token is None:
        problem(field, f"no default reward token for model_type '{cfg.get('model_type')}'",
                "set preference.reward_token_id: a reserved token id the conversations never contain "
                "(InternLM2: 92527, Llama 3: 128002)")
        return
    vocab = cfg.get("vocab_size")
    if isinstance(vocab, int) and token >= vocab:
        problem(field, f"{token} is not a token of the model (vocab_size {vocab})", f"an id below {vocab}")
    elif token == cfg.get("pad_token_id"):
        problem(field, f"{token} is the pad token: a sequence-classification head skips padding, so the score "
                "would be read one token early", "a reserved token that is not the pad token")


def outputs(s: FinetuneSettings) -> set[str]:
    if s.mode == "reward":
        return {"checkpoint", "reward_model"}
    if s.adapter_method:
        return {"checkpoint", "adapter", *(("model",) if s.do_merge else ())}
    return {"checkpoint", "model"}


def downstream_problems(ctx: StageContext) -> list[Problem]:
    """The outputs other stages take from finetune, checked against what this mode yields: a reward model
    is a scorer, so eval and deploy cannot take it, and nothing else replaces the chat model they expect."""
    s: FinetuneSettings = ctx.settings
    chain = ctx.chain
    stages = chain.config.stages
    problems: list[Problem] = []
    produced = outputs(s)
    from internlm_chain.config.interpolate import REFERENCE, find_references

    for path, expr in find_references(chain.doc.data):
        m = REFERENCE.match(expr)
        if not m or m.group(1) != "finetune" or not path or path[0] != "stages":
            continue
        out, where = m.group(2), ".".join(str(p) for p in path)
        if out == "reward_model" and s.mode == "reward":
            problems.append(chain.problem(where, f"stage '{path[1]}' cannot take a reward model: it scores "
                                          "replies, it is not a chat model to serve or evaluate",
                                          "point this at a chat model (e.g. ${stages.finetune.outputs.model} "
                                          "of a dpo/orpo/sft run)"))
        elif out not in produced:
            problems.append(chain.problem(where, f"finetune with mode {s.mode}, method {s.method} yields no "
                                          f"`{out}` output", "its outputs are " + ", ".join(sorted(produced))))
    if s.mode != "reward":
        return problems
    deploy, eval_ = stages.deploy, stages.eval
    if deploy is not None and deploy.enabled and not deploy.model:
        problems.append(ctx.problem("mode", "mode reward yields a reward model, which deploy cannot serve; "
                                    "deploy would silently serve the base model instead",
                                    "set stages.deploy.model to the chat model to serve, or disable deploy"))
    if eval_ is not None and eval_.enabled and eval_.models is None:
        problems.append(ctx.problem("mode", "mode reward yields a reward model, which eval cannot score as a "
                                    "chat model; eval would only evaluate the base model",
                                    "set stages.eval.models explicitly, or disable eval"))
    return problems


def metrics(losses: dict, verify: dict) -> dict:
    """Final values of the scalars XTuner logs for the mode, and the reward model's own check."""
    out: dict = {}
    for key, points in sorted((losses.get("scalars") or {}).items()):
        if points:
            out[f"final_{key}"] = points[-1][1]
    if "reward_check" in verify:
        out["reward_check"] = verify["reward_check"]
    return out


def finite(m: dict) -> bool:
    values = [m.get("final_loss")] + [v for k, v in m.items() if k.startswith("final_")]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
