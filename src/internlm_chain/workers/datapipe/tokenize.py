"""Tokenizer (given by path, or a byte-level BPE trained on the clean corpus) and InternEvo's format.

InternEvo `tokenized` data: `<root>/<type>/*.bin` of UTF-8 JSON lines {"tokens": [...]} with BOS and
EOS included, and beside each a `.bin.meta`: `np.save` of an int32 (N, 2) array [byte_offset,
n_tokens]. Offsets are int32, so a .bin rolls over to a new file before `internevo_max_bytes`
(default 1 GiB, always < 2 GiB). `<type>` is the document language here.
"""

from __future__ import annotations

import json
import os

import numpy as np

SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
CHATML = ["<|im_start|>", "<|im_end|>"]
# InternLM2's ChatML template, written out so the tokenizer is usable for chat fine-tuning as is
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INT32_MAX = 2**31 - 1


def tokenizer_dir(cfg) -> str:
    return os.path.join(cfg.out_dir, "tokenizer")


def _iter_clean_texts(cfg, sids):
    for sid in sids:
        path = os.path.join(cfg.out_dir, "clean", sid + ".jsonl")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as fh:
            for line in fh:
                yield json.loads(line)["text"]


def train_bpe(texts, vocab_size: int, out: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[SPECIALS[k] for k in ("unk_token", "bos_token", "eos_token",
                                                                       "pad_token")] + CHATML,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **SPECIALS,
              "additional_special_tokens": CHATML, "chat_template": CHAT_TEMPLATE,
              "model_max_length": 4096, "clean_up_tokenization_spaces": False,
              # Llama-style models take no token_type_ids; without this, 4.x tokenizers emit them and
              # generate() rejects them
              "model_input_names": ["input_ids", "attention_mask"]}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, ensure_ascii=False)
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as fh:
        json.dump({**SPECIALS, "additional_special_tokens": CHATML}, fh, indent=2)


def prepare_tokenizer(cfg, sids) -> None:
    out = tokenizer_dir(cfg)
    if cfg.tokenizer == "train":
        texts = _iter_clean_texts(cfg, sids)
        first = next(texts, None)
        if first is None:
            raise SystemExit("no clean documents left to train a tokenizer on")
        train_bpe(_chain([first], texts), cfg.tokenizer_vocab_size, out)
    else:
        src = cfg.tokenizer
        os.makedirs(out, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if os.path.exists(os.path.join(src, name)):
                with open(os.path.join(src, name), "rb") as a, open(os.path.join(out, name), "wb") as b:
                    b.write(a.read())


def _chain(*its):
    for it in its:
        yield from it


def _special_id(tok, config: dict, key: str):
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return tok.token_to_id(value) if value else None


def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    config = {}
    cpath = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(cpath):
        with open(cpath, encoding="utf-8") as fh:
            config = json.load(fh)
    return tok, _special_id(tok, config, "bos_token"), _special_id(tok, config, "eos_token")


class BinWriter:
    """Rolls `<dir>/<stem>-<k>.bin` before a file would pass `max_bytes`."""

    def __init__(self, directory: str, stem: str, max_bytes: int):
        self.dir, self.stem = directory, stem
        self.max_bytes = min(max_bytes, INT32_MAX)
        self.k = -1
        self.fh = None
        self.offset = 0
        self.meta: list[tuple[int, int]] = []
        self.files: list[str] = []

    def _roll(self) -> None:
        self.close()
        self.k += 1
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"{self.stem}-{self.k:03d}.bin")
        self.fh = open(path + ".tmp", "wb")
        self.files.append(path)
        self.offset = 0
        self.meta = []

    def write(self, tokens: list[int]) -> None:
        line = ('{"tokens":[' + ",".join(map(str, tokens)) + "]}\n").encode("utf-8")
        if self.fh is None or (self.offset + len(line) > self.max_bytes and self.meta):
            self._roll()
        self.meta.append((self.offset, len(tokens)))
        self.fh.write(line)
        self.offset += len(line)

    def close(self) -> None:
        if self.fh is None:
            return
        self.fh.close()
        path = self.files[-1]
        np.save(path + ".meta.tmp.npy", np.asarray(self.meta, dtype=np.int32).reshape(-1, 2))
        os.replace(path + ".meta.tmp.npy", path + ".meta")
        os.replace(path + ".tmp", path)
        self.fh = None


_TOK_CACHE: dict = {}


def tokenize_shard(cfg, shard) -> None:
    from .pipeline import _mark, _marker

    sid = shard["id"]
    marker = _marker(cfg, "tokenize", sid)
    if os.path.exists(marker):
        return
    path = tokenizer_dir(cfg)
    if path not in _TOK_CACHE:
        _TOK_CACHE[path] = load_tokenizer(path)
    tok, bos, eos = _TOK_CACHE[path]
    writers: dict[str, BinWriter] = {}
    clean = os.path.join(cfg.out_dir, "clean", sid + ".jsonl")
    batch: list[tuple[str, str]] = []

    def flush():
        encs = tok.encode_batch([t for _, t in batch], add_special_tokens=False)
        for (lang, _), enc in zip(batch, encs, strict=False):
            ids = ([bos] if bos is not None else []) + enc.ids + ([eos] if eos is not None else [])
            if lang not in writers:
                safe = "".join(c for c in lang if c.isalnum() or c in "-_") or "other"
                writers[lang] = BinWriter(os.path.join(cfg.out_dir, "internevo", safe), sid, cfg.internevo_max_bytes)
            writers[lang].write(ids)
        batch.clear()

    if os.path.exists(clean):
        with open(clean, "rb") as fh:
            for line in fh:
                rec = json.loads(line)
                if "messages" in rec:
                    continue  # conversations go to the SFT export, not the pre-training corpus
                batch.append((rec["meta"].get("lang", "other"), rec["text"]))
                if len(batch) >= 256:
                    flush()
        if batch:
            flush()
    for w in writers.values():
        w.close()
    _mark(marker)


def read_bin(path: str) -> list[list[int]]:
    """Read a .bin back through its .bin.meta (used by tests and the report)."""
    meta = np.load(path + ".meta")
    out = []
    with open(path, "rb") as fh:
        data = fh.read()
    for off, n in meta.tolist():
        end = data.index(b"\n", off)
        tokens = json.loads(data[off:end])["tokens"]
        if len(tokens) != n:
            raise ValueError(f"{path}: meta says {n} tokens at offset {off}, line has {len(tokens)}")
        out.append(tokens)
    return out
