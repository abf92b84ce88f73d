"""Write a tiny random Llama-architecture model with a BPE tokenizer and a ChatML chat template.

Runs inside any runtime that has numpy, safetensors and tokenizers (no torch, no transformers, no hub),
so every stage can be exercised on a CPU in seconds. The files are the plain Hugging Face layout that
transformers 4.x and 5.x, XTuner, OpenCompass, LMDeploy and Lagent all read natively.

    python tiny_model.py OUT_DIR [--corpus FILE] [--vocab 600] [--hidden 64] [--layers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>",
            "<|interpreter|>", "<|plugin|>"]

# InternLM2's chat format (ChatML with a leading BOS); generation stops at <|im_end|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BUILTIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Large language models are trained on text from many sources.",
    "What is 2 + 3? The answer is 5.",
    "Please compute 12 * 7 with the calculator tool.",
    "Question: Which planet is the largest? Answer: Jupiter.",
    "书生·浦语是一个大语言模型。",
    "今天天气很好，我们去公园散步吧。",
    "数据清洗包括去重、过滤和质量评估。",
    "问题：一加一等于几？答案：二。",
    "A B C D 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) . , ? !",
]


def train_tokenizer(lines: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_tokenizer(tok, out: str, max_len: int) -> None:
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
        "additional_special_tokens": SPECIALS[3:],
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": max_len, "chat_template": CHAT_TEMPLATE,
        # without this, 4.x tokenizers emit token_type_ids, which Llama's generate() rejects
        "model_input_names": ["input_ids", "attention_mask"],
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, ensure_ascii=False)
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special_map["additional_special_tokens"] = SPECIALS[3:]
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as fh:
        json.dump(special_map, fh, indent=2)


def llama_config(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, max_len: int,
                 im_end: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": hidden * 2,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads, "max_position_embeddings": max_len, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "float32", "use_cache": True,
    }


def random_weights(cfg: dict, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * hd

    def normal(*shape):
        return (rng.standard_normal(shape) * cfg["initializer_range"]).astype(np.float32)

    w = {"model.embed_tokens.weight": normal(v, h), "model.norm.weight": np.ones(h, np.float32),
         "lm_head.weight": normal(v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({
            p + "self_attn.q_proj.weight": normal(cfg["num_attention_heads"] * hd, h),
            p + "self_attn.k_proj.weight": normal(kv, h),
            p + "self_attn.v_proj.weight": normal(kv, h),
            p + "self_attn.o_proj.weight": normal(h, cfg["num_attention_heads"] * hd),
            p + "mlp.gate_proj.weight": normal(inter, h),
            p + "mlp.up_proj.weight": normal(inter, h),
            p + "mlp.down_proj.weight": normal(h, inter),
            p + "input_layernorm.weight": np.ones(h, np.float32),
            p + "post_attention_layernorm.weight": np.ones(h, np.float32),
        })
    return w


def build(out: str, corpus: str | None, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int,
          max_len: int, seed: int) -> dict:
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    lines = list(BUILTIN_CORPUS)
    if corpus:
        with open(corpus, encoding="utf-8", errors="replace") as fh:
            lines += [line.strip() for line in fh if line.strip()]
    tok = train_tokenizer(lines, vocab)
    write_tokenizer(tok, out, max_len)
    im_end = tok.token_to_id("<|im_end|>")
    cfg = llama_config(tok.get_vocab_size(), hidden, layers, heads, kv_heads, max_len, im_end)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": 1, "eos_token_id": [2, im_end], "pad_token_id": 2, "do_sample": False,
                   "max_new_tokens": 32}, fh, indent=2)
    save_file(random_weights(cfg, seed), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--corpus", help="Extra text (one document per line) to train the tokenizer on.")
    ap.add_argument("--vocab", type=int, default=600)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = build(a.out, a.corpus, a.vocab, a.hidden, a.layers, a.heads, a.kv_heads, a.max_len, a.seed)
    print(json.dumps({"out": a.out, "vocab_size": cfg["vocab_size"], "hidden_size": cfg["hidden_size"],
                      "layers": cfg["num_hidden_layers"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
