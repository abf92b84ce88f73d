"""InternEvo checkpoint → Hugging Face Llama-layout model (runs inside the `internevo` runtime, on CPU).

1. Pick the newest step folder holding exactly the model files InternEvo writes for the configured layout
   (`model_tp{t}_pp{p}.pt`; under isp `model_tp{t}_wp{w}_pp{p}.pt` for the ranks that save).
2. Merge tensor/weight-parallel shards (column-parallel linears along dim 0, row-parallel along dim 1,
   every linear along dim 0 over the weight group under isp, the embedding along the hidden dimension and
   the head along the vocabulary over the tensor group), check replicated tensors agree, and give each
   pipeline stage's (and interleaved model chunk's) layers their global numbers.
3. Write LlamaForCausalLM weights (safetensors, sharded above 4 GiB), config.json,
   generation_config.json and the tokenizer (with its chat template): loadable by transformers,
   XTuner, OpenCompass and LMDeploy without remote code.
4. Build InternEvo's own model from the merged weights (one CPU process, fp32) and save its logits on
   a fixed probe batch; workers/pretrain_verify_hf.py compares them with transformers' logits of the
   converted model in the xtuner runtime, so the check uses the transformers that fine-tuning will
   load the model with (this runtime carries transformers only because InternEvo's model registry
   imports its llava code).

stdlib + torch/numpy/internlm only; never imports internlm_chain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARD_RE = re.compile(r"^model_tp(\d+)(?:_wp(\d+))?_pp(\d+)\.pt$")
# how InternEvo shards each linear (core/parallel/shard.py:get_parallel_strategies_split_mode): the
# output head and embedding always over the tensor group; other linears over the tensor group (mtp, msp,
# fsp) or the weight group (isp). "column" = nn.Linear weight split along dim 0 (outputs), "row" = dim 1.
COLUMN = ("wqkv", "wq", "wk", "wv", "w1", "w3")
ROW = ("wo", "w2")  # row-parallel under mtp/msp/fsp; under isp every linear is column-split over wp
SHARD_BYTES = 4 << 30
# Applied only when the tokenizer brings no chat template of its own.
CHAT_TEMPLATES = {
    "internlm2_chat": "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                      "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
                      "{{ '<|im_start|>assistant\\n' }}{% endif %}",
}


def fail(message: str) -> None:
    print(f"pretrain_to_hf: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---- find and merge ---------------------------------------------------------------------------------

def shard_files(step_dir: str) -> dict[tuple[int, int, int], str]:
    out = {}
    for name in os.listdir(step_dir):
        m = SHARD_RE.match(name)
        if m:
            out[(int(m.group(1)), int(m.group(2) or 0), int(m.group(3)))] = os.path.join(step_dir, name)
    return out


def expected_shards(tp: int, wp: int, pp: int, isp: bool) -> set[tuple[int, int, int]]:
    """The (tp, wp, pp) ranks whose model files InternEvo's save_model_checkpoint writes.

    Without isp: rank (t, dp t % dp) of each tensor group writes model_tp{t}_pp{p}.pt. Under isp every rank
    with weight-data-parallel rank 0 or data-parallel rank 0 writes model_tp{t}_wp{w}_pp{p}.pt. Tensor and
    weight groups are runs of consecutive ranks inside a pipeline stage, data and weight-data groups stride
    over them (core/context/process_group_initializer.py), so stage-local rank l has tp rank l % tp, wp rank
    l % wp, dp rank l // tp, wdp rank l // wp: the writers are l < max(tp, wp). With tp 2 and wp 2 that is
    tp0_wp0 and tp1_wp1 — not a tp × wp grid.
    """
    if isp:
        pairs = {(rank % tp, rank % wp) for rank in range(max(tp, wp))}
    else:
        pairs = {(t, 0) for t in range(tp)}
    return {(t, w, p) for t, w in pairs for p in range(pp)}


def latest_checkpoint(folder: str, expected: set[tuple[int, int, int]]) -> tuple[int, str]:
    """The newest step folder holding exactly the expected model shards (a run killed mid-save leaves an
    incomplete one; a folder written under another parallel layout is not this run's)."""
    steps = sorted((int(d), os.path.join(folder, d)) for d in os.listdir(folder)
                   if d.isdigit() and os.path.isdir(os.path.join(folder, d)))
    seen = []
    for step, path in reversed(steps):
        found = set(shard_files(path))
        if found == expected:
            return step, path
        if found - expected:
            fail(f"{path} holds model shards {_names(found - expected)} that the configured parallel layout "
                 f"does not write (expected {_names(expected)}): it was saved under another layout")
        seen.append(f"{step}: {len(found)}/{len(expected)}")
    fail(f"no complete checkpoint (model shards {_names(expected)}) under {folder}"
         + (f" (step: shards found — {', '.join(seen)})" if seen else ""))


def _names(keys) -> str:
    return ", ".join(f"tp{t}_wp{w}_pp{p}" for t, w, p in sorted(keys))


def split_of(key: str, isp: bool) -> tuple[str, int] | None:
    """(group the tensor is sharded over, dim), or None for a tensor every rank holds whole."""
    parts = key.split(".")
    if parts[0] == "tok_embeddings":
        return "tensor", 1  # Embedding1D splits the hidden dimension over the tensor group
    if parts[0] == "output":
        return "tensor", 0  # the head splits the vocabulary over the tensor group, isp included
    module = parts[-2] if len(parts) >= 2 else ""
    if module in COLUMN or (isp and module in ROW):
        return ("weight" if isp else "tensor"), 0
    if module in ROW:
        return "tensor", 1
    return None


def layer_ranges(num_layers: int, pp: int, chunks: int) -> list[list[tuple[int, int]]]:
    """Global layer range [start, end) of each (pipeline stage, model chunk), the way InternEvo's
    partition_uniform cuts them: the layers in `chunks` equal blocks, each block cut over the stages
    with the later stages taking one extra layer when it does not divide evenly."""
    if num_layers % chunks:
        fail(f"{num_layers} layers cannot be cut into {chunks} model chunks")
    per_chunk = num_layers // chunks
    if per_chunk < pp:
        fail(f"{per_chunk} layers per chunk cannot fill {pp} pipeline stages")
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(pp)]
    for c in range(chunks):
        start = c * per_chunk
        for p in range(pp):
            size = per_chunk // pp + (p >= pp - per_chunk % pp)
            ranges[p].append((start, start + size))
            start += size
    return ranges


def merge_stage(shards: dict[tuple[int, int], dict], tp: int, wp: int, isp: bool) -> dict:
    """One pipeline stage's state dict from its tensor/weight-parallel shard files."""
    import torch

    keysets = {frozenset(sd) for sd in shards.values()}
    if len(keysets) != 1:
        fail("the shard files of one pipeline stage hold different tensors")
    by_group = {"tensor": {}, "weight": {}}
    for (t, w), sd in sorted(shards.items()):
        by_group["tensor"].setdefault(t, sd)
        by_group["weight"].setdefault(w, sd)
    sizes = {"tensor": tp, "weight": wp}
    stage: dict = {}
    for key in next(iter(shards.values())):
        split = split_of(key, isp)
        if split is None:
            copies = [sd[key] for sd in shards.values()]
            for other in copies[1:]:
                if not torch.equal(copies[0], other):
                    diff = (copies[0].float() - other.float()).abs().max().item()
                    fail(f"{key} should be identical in every shard but differs by up to {diff:.3g}")
            stage[key] = copies[0]
            continue
        group, dim = split
        if sorted(by_group[group]) != list(range(sizes[group])):
            fail(f"{key}: shards for {group} ranks {sorted(by_group[group])} of {sizes[group]}")
        stage[key] = torch.cat([by_group[group][r][key] for r in range(sizes[group])], dim=dim)
    return stage


def merge_shards(files: dict[tuple[int, int, int], str], par: dict, num_layers: int, num_chunks: int) -> dict:
    """All shards → one state dict with global layer numbers (InternEvo's unsharded key names)."""
    import torch

    isp = par["mode"] == "isp"
    tp, wp, pp = par["tp"], par["wp"] if isp else 1, par["pp"]
    ranges = layer_ranges(num_layers, pp, num_chunks)
    merged: dict = {}
    for p in range(pp):
        shards = {(t, w): torch.load(path, map_location="cpu") for (t, w, q), path in files.items() if q == p}
        stage = merge_stage(shards, tp, wp, isp)
        del shards
        for key, value in stage.items():
            chunk, rest = 0, key
            if num_chunks > 1:  # nn.ModuleList of NaiveAMPModel chunks: "<chunk>.model.<key>"
                m = re.match(r"^(\d+)\.(?:model\.)?(.*)$", key)
                if not m:
                    fail(f"unexpected tensor {key} in an interleaved (num_chunks {num_chunks}) checkpoint")
                chunk, rest = int(m.group(1)), m.group(2)
                if chunk >= num_chunks:
                    fail(f"{key}: chunk {chunk} but the config has num_chunks {num_chunks}")
            start, end = ranges[p][chunk]
            m = re.match(r"^layers\.(\d+)\.(.*)$", rest)
            if m:
                if int(m.group(1)) >= end - start:
                    fail(f"{key} in pipeline stage {p}: chunk {chunk} holds layers {start}..{end - 1} only")
                rest = f"layers.{start + int(m.group(1))}.{m.group(2)}"
            if rest in merged:
                fail(f"{rest} appears in more than one pipeline stage or chunk")
            merged[rest] = value
    found = {int(k.split(".")[1]) for k in merged if k.startswith("layers.")}
    if found != set(range(num_layers)):
        fail(f"the checkpoint holds layers {sorted(found)}, the config says {num_layers}")
    return merged


# ---- HF Llama layout ----------------------------------------------------------------------------------

def to_llama(sd: dict, model_cfg: dict) -> tuple[dict, dict]:
    hidden = model_cfg["hidden_size"]
    heads = model_cfg["num_attention_heads"]
    kv_heads = model_cfg.get("num_kv_attention_heads", heads)
    head_dim = hidden // heads
    q_per_kv = heads // kv_heads
    out: dict = {}
    num_layers = 0
    for key, value in sd.items():
        value = value.contiguous()  # cast once, when saving: a 7B model need not exist twice in fp32
        m = re.match(r"^layers\.(\d+)\.(.*)$", key)
        if not m:
            name = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                    "output.weight": "lm_head.weight"}.get(key)
            if name is None:
                fail(f"unexpected tensor {key} in the checkpoint")
            out[name] = value
            continue
        i, rest = int(m.group(1)), m.group(2)
        num_layers = max(num_layers, i + 1)
        p = f"model.layers.{i}."
        if rest == "attention.wqkv.weight":
            # InternEvo packs each KV group as [q_1..q_n, k, v] rows of head_dim
            w = value.view(kv_heads, q_per_kv + 2, head_dim, hidden)
            out[p + "self_attn.q_proj.weight"] = w[:, :q_per_kv].reshape(heads * head_dim, hidden).contiguous()
            out[p + "self_attn.k_proj.weight"] = w[:, -2].reshape(kv_heads * head_dim, hidden).contiguous()
            out[p + "self_attn.v_proj.weight"] = w[:, -1].reshape(kv_heads * head_dim, hidden).contiguous()
            continue
        name = {"attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
                "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
                "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w3.weight": "mlp.up_proj.weight",
                "feed_forward.w2.weight": "mlp.down_proj.weight", "attention_norm.weight": "input_layernorm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight"}.get(rest)
        if name is None:
            fail(f"unexpected tensor {key} in the checkpoint (only InternLM2/Llama2 layouts convert)")
        out[p + name] = value
    inter = out["model.layers.0.mlp.gate_proj.weight"].shape[0]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": num_layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "vocab_size": out["model.embed_tokens.weight"].shape[0],
        "max_position_embeddings": model_cfg.get("max_position_embeddings", 4096),
        "rms_norm_eps": model_cfg.get("layer_norm_epsilon", 1e-5), "rope_theta": float(model_cfg.get("rope_base", 10000)),
        "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
    }
    return out, config


def save_safetensors(tensors: dict, out_dir: str, dtype: str) -> list[str]:
    """The safetensors format (8-byte header size, JSON header, raw little-endian data), sharded."""
    import torch

    target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    code = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype]
    shards: list[list[str]] = [[]]
    size = 0
    for name in tensors:
        n = tensors[name].numel() * target.itemsize
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    files = []
    index = {}
    for i, names in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
        for name in names:
            t = tensors[name].to(target).contiguous()
            data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
            offset += len(data)
            blobs.append(data)
            index[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(out_dir, fname), "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for data in blobs:
                f.write(data)
        files.append(fname)
    if len(files) > 1:
        total = sum(t.numel() * target.itemsize for t in tensors.values())
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": index}, f, indent=2)
    return files


def copy_tokenizer(src: str, out_dir: str, chat_template: str | None) -> dict:
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if os.path.isfile(path) and (name.startswith(("tokenizer", "special_tokens_map", "vocab", "merges"))
                                     or name.endswith(".model")):
            shutil.copy2(path, os.path.join(out_dir, name))
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    changed = False
    if not cfg.get("chat_template") and chat_template in CHAT_TEMPLATES:
        cfg["chat_template"] = CHAT_TEMPLATES[chat_template]
        changed = True
    if "model_input_names" not in cfg:  # the Llama layout takes no token_type_ids
        cfg["model_input_names"] = ["input_ids", "attention_mask"]
        changed = True
    if changed:
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False)
    special = {}
    tok_json = os.path.join(out_dir, "tokenizer.json")
    if os.path.exists(tok_json):
        ids = {t["content"]: t["id"] for t in json.load(open(tok_json, encoding="utf-8")).get("added_tokens", [])}
        for key in ("bos_token", "eos_token", "pad_token"):
            token = cfg.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if token in ids:
                special[key.replace("_token", "_token_id")] = ids[token]
    return special


# ---- probe: InternEvo's own forward on the merged weights -------------------------------------------------

def probe_logits(config_path: str, merged: dict, vocab: int, dtype: str):
    """InternEvo's logits with the weights exactly as saved (rounded to `dtype`), computed in fp32."""
    import numpy as np
    import torch
    from pretrain_compat import cpu_smoke_patches, fix_bracketed_ipv4, probe_input_ids

    fix_bracketed_ipv4()
    cpu_smoke_patches()
    from internlm.core.context import Config
    from internlm.core.context import global_context as gpc
    from internlm.initialize.launch import args_sanity_check, launch
    from internlm.model.builder import create_model
    from internlm.model.registry import register_model_initializer
    from internlm.train import initialize_parallel_communicator

    cfg = Config.from_file(config_path)
    cfg["parallel"] = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"),
                           pipeline=dict(size=1, interleaved_overlap=False),
                           weight=dict(size=1, overlap=False, memory_pool=False))
    cfg["model"]["dtype"] = "torch.float32"
    cfg["model"]["num_chunks"] = 1  # one process, one chunk: the merged keys are the unsharded model's
    cfg["model"]["use_flash_attn"] = False
    cfg["model"]["checkpoint"] = 0.0
    cfg["model"]["parallel_output"] = False
    cfg["data"]["use_packed_dataset"] = False
    cfg["ckpt"] = dict(enable_save_ckpt=False, auto_resume=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(config=cfg, rank=0, world_size=1, host="127.0.0.1", port=port, backend="gloo")
    args_sanity_check()
    register_model_initializer()
    model = create_model(model_type=gpc.config.model_type, **gpc.config.model)
    initialize_parallel_communicator(model)
    saved = getattr(torch, dtype)
    missing, unexpected = model.load_state_dict({k: v.to(saved).float() for k, v in merged.items()}, strict=False)
    if missing or unexpected:
        fail(f"the merged checkpoint does not fit InternEvo's model: missing {missing}, unexpected {unexpected}")
    model.eval()
    ids = probe_input_ids(vocab)
    with torch.no_grad():
        logits = model(input_ids=ids).float()
    return ids.numpy().astype(np.int64), logits.numpy().astype(np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", required=True, help="InternEvo save_ckpt_folder (without local:).")
    p.add_argument("--config", required=True, help="The rendered InternEvo config the run used.")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--chat-template", default=None)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--probe", required=True, help="Where to write the InternEvo probe (npz).")
    args = p.parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # InternEvo pickles its own classes
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # conversion is a CPU job wherever it runs

    import numpy as np
    from internlm.core.context import Config

    cfg = Config.from_file(args.config)
    par = cfg["parallel"]
    if par.get("zero1", {}).get("fsdp"):
        fail("FSDP checkpoints (parallel.zero1.fsdp, model_tp*_pp*_dp*.pt) are not converted")
    layout = {"mode": par["tensor"]["mode"], "tp": par["tensor"]["size"], "pp": par["pipeline"]["size"],
              "wp": par["weight"]["size"] if par["tensor"]["mode"] == "isp" else 1}
    chunks = cfg["model"].get("num_chunks", 1)
    expected = expected_shards(layout["tp"], layout["wp"], layout["pp"], layout["mode"] == "isp")
    step, step_dir = latest_checkpoint(args.checkpoints, expected)
    print(f"pretrain_to_hf: converting step {step} ({len(expected)} shard(s): {_names(expected)}; "
          f"{chunks} chunk(s) per stage) from {step_dir}", flush=True)
    merged = merge_shards(shard_files(step_dir), layout, cfg["model"]["num_layers"], chunks)
    model_cfg = dict(cfg["model"])
    tensors, hf_config = to_llama(merged, model_cfg)

    tmp = args.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    hf_config["torch_dtype"] = args.dtype
    special = copy_tokenizer(args.tokenizer, tmp, args.chat_template) if args.tokenizer else {}
    hf_config.update(special)
    files = save_safetensors(tensors, tmp, args.dtype)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({k: v for k, v in special.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")}, f)
    with open(os.path.join(tmp, "internevo_source.json"), "w") as f:
        json.dump({"checkpoint": step_dir, "step": step, "model_type": cfg.get("model_type"),
                   "shards": {"tensor": layout["tp"], "weight": layout["wp"], "pipeline": layout["pp"],
                              "mode": layout["mode"], "num_chunks": chunks, "files": _names(expected)}},
                  f, indent=2)
    del tensors
    ids, logits = probe_logits(args.config, merged, hf_config["vocab_size"], args.dtype)
    np.savez(args.probe, input_ids=ids, logits=logits, step=np.array(step))
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    print(f"pretrain_to_hf: wrote {args.out} ({', '.join(files)}); probe {args.probe}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
