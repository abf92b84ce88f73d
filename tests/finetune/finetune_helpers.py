"""Shared helpers for the finetune tests: data files in the formats XTuner reads, and a fake 7B model dir."""

from __future__ import annotations

import json
from pathlib import Path

# InternLM2-chat-7B's config.json fields that matter to the stage (no weights: planning never loads them)
INTERNLM2_7B_CONFIG = {
    "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 92544,
    "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_rows(n: int = 24) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(n)]


def text_rows(n: int = 30, topic: str = "Large language models are trained on text") -> list[dict]:
    return [{"text": f"{topic}, document {i}. 书生·浦语是一个大语言模型，第{i}篇。"} for i in range(n)]


def fake_7b(root: Path) -> Path:
    model = root / "models" / "internlm2-chat-7b"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(INTERNLM2_7B_CONFIG), encoding="utf-8")
    return model


# InternLM2-chat's chat template (ChatML), as its tokenizer_config.json carries it
CHATML = ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
          "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def pair_rows(n: int = 8) -> list[dict]:
    """Preference pairs: a right and a wrong answer to the same question."""
    return [{"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"What is {i} + {i}?"}],
             "chosen": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I am not sure; maybe {2 * i + 3}?"}]} for i in range(n)]


def fake_7b_chat(root: Path) -> Path:
    """fake_7b with the tokenizer config a chat model has (preference modes need its chat template)."""
    model = fake_7b(root)
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}), encoding="utf-8")
    return model
