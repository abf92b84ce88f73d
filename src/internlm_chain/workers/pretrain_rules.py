"""InternEvo's configuration rules, restated as arithmetic over a rendered config (stdlib only).

InternEvo checks these with bare `assert`s spread over `args_sanity_check`
(internlm/initialize/launch.py), `ParallelContext.init_parallel_groups`/`check_sanity`
(internlm/core/context/parallel_context.py) and the model constructors — and only after the
processes have started on the cluster. Here they run before anything is submitted: in the ichain
process on the settings, and in the `internevo` runtime on the config as InternEvo's own loader
(`Config.from_file`) read it. Each finding carries the upstream rule it stands for.

Used by the pretrain stage (imported as a module) and by workers/pretrain_validate.py and
workers/pretrain_driver.py (imported from their folder), so it must not import internlm_chain.
"""

from __future__ import annotations

TENSOR_MODES = ("mtp", "msp", "fsp", "isp")
DTYPES = ("torch.bfloat16", "torch.float16", "torch.half", "torch.float32", "torch.tf32")
REQUIRED_KEYS = ("parallel", "data", "ckpt", "model", "hybrid_zero_optimizer", "grad_scaler", "adam",
                 "beta2_scheduler", "loss", "lr_scheduler")
MODEL_TYPES = ("INTERNLM2_PUBLIC", "LLAMA2")
# CPU smoke mode proves the plumbing, it does not train models: beyond this it would only be slow.
SMOKE_MAX_PARAMS = 50_000_000


def _size(value, default=1):
    if value is None:
        return default
    if isinstance(value, dict):
        return value.get("size", default)
    return value


def ffn_width(hidden: int, mlp_ratio: float, multiple_of: int) -> int:
    """InternEvo's FFN width: int(hidden × ratio) rounded up to `multiple_of` (model/modules/mlp.py)."""
    width = int(hidden * mlp_ratio)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def param_count(model: dict) -> int:
    h, layers, vocab = model["hidden_size"], model["num_layers"], model["vocab_size"]
    heads, kv_heads = model["num_attention_heads"], model.get("num_kv_attention_heads", model["num_attention_heads"])
    head_dim = h // heads
    ffn = ffn_width(h, model.get("mlp_ratio", 4.0), model.get("multiple_of", 256))
    per_layer = h * (h + 2 * kv_heads * head_dim) + h * h + 3 * h * ffn + 2 * h
    return 2 * vocab * h + layers * per_layer + h


def parallel_sizes(cfg: dict, world_size: int) -> dict:
    """dp, wdp and ZeRO-1 sizes the way InternEvo derives them (dp is never set by hand)."""
    par = cfg.get("parallel", {})
    tp, pp, wp = _size(par.get("tensor")), _size(par.get("pipeline")), _size(par.get("weight"))
    mode = par.get("tensor", {}).get("mode", "mtp") if isinstance(par.get("tensor"), dict) else "mtp"
    dp = max(1, world_size // pp // tp)
    wdp = max(1, world_size // pp // wp)
    zero1 = _size(par.get("zero1"), -1)
    if zero1 == -1:
        zero1 = wdp if mode == "isp" else dp
    return {"tp": tp, "pp": pp, "wp": wp, "dp": dp, "wdp": wdp, "zero1": max(1, zero1), "mode": mode}


def check(cfg: dict, world_size: int) -> list[tuple[str, str, str]]:
    """Every rule the config breaks for `world_size` processes: (InternEvo key, what, upstream rule)."""
    out: list[tuple[str, str, str]] = []

    def bad(key: str, message: str, rule: str) -> None:
        out.append((key, message, rule))

    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        bad("", "the config lacks " + ", ".join(missing),
            "InternEvo's trainer reads these top-level sections unconditionally")
        return out
    if cfg.get("model_type", "INTERNLM") not in MODEL_TYPES:
        bad("model_type", f"model_type {cfg.get('model_type')!r} is not one of {', '.join(MODEL_TYPES)}",
            "internlm/model/registry.py registers INTERNLM, INTERNLM2_PUBLIC, LLAMA2, INTERNLM_MoE, LLAVA; "
            "only INTERNLM2_PUBLIC and LLAMA2 convert to the HF Llama layout")

    par, data, model, ckpt = cfg["parallel"], cfg["data"], cfg["model"], cfg["ckpt"]
    mode = par.get("tensor", {}).get("mode", "mtp") if isinstance(par.get("tensor"), dict) else "mtp"
    if mode not in TENSOR_MODES:
        bad("parallel.tensor.mode", f"tensor mode {mode!r} is unknown",
            "args_sanity_check: tensor mode must be one of mtp, msp, fsp, isp")
    s = parallel_sizes(cfg, world_size)
    tp, pp, wp, dp, wdp, zero1 = s["tp"], s["pp"], s["wp"], s["dp"], s["wdp"], s["zero1"]
    if world_size != dp * pp * tp:
        bad("parallel.tensor.size",
            f"{world_size} GPUs cannot be split into pipeline {pp} × tensor {tp} × data-parallel groups "
            f"({pp * tp} does not divide {world_size})",
            "ParallelContext.check_sanity: world size == data parallel × pipeline parallel × tensor parallel")
    elif world_size != wdp * pp * wp:
        bad("parallel.weight.size",
            f"{world_size} GPUs cannot be split into pipeline {pp} × weight-parallel {wp} groups",
            "ParallelContext.check_sanity: world size == weight-data parallel × pipeline × weight parallel")
    group, group_name = (wdp, "weight-data-parallel") if mode == "isp" else (dp, "data-parallel")
    if not out:
        if zero1 > group:
            bad("parallel.zero1", f"ZeRO-1 size {zero1} is larger than the {group_name} size {group}",
                f"init_parallel_groups: zero1 size <= {group_name} size (-1 means the whole group)")
        elif group % zero1:
            bad("parallel.zero1", f"ZeRO-1 size {zero1} does not divide the {group_name} size {group}",
                f"init_parallel_groups: {group_name} size % zero1 size == 0")
    if mode != "isp" and wp > 1:
        bad("parallel.weight.size", f"weight parallel size {wp} needs tensor mode isp (it is {mode})",
            "args_sanity_check: weight parallel is only supported with isp")
    flash = model.get("use_flash_attn", True)
    packed = data.get("use_packed_dataset", True)
    if bool(flash) != bool(packed):
        bad("data.use_packed_dataset",
            f"use_flash_attn is {flash} but use_packed_dataset is {packed}; they must be equal",
            "args_sanity_check: use_packed_dataset should be set same value as use_flash_attn")
    if model.get("parallel_output", True) and not flash:
        bad("model.parallel_output", "parallel_output (vocab-sharded logits) needs use_flash_attn",
            "ops/cross_entropy.py: only flash cross entropy supports parallel_output")
    if not packed and not data.get("pack_sample_into_one", False):
        bad("data.pack_sample_into_one", "unpacked data (use_packed_dataset False) needs pack_sample_into_one",
            "data/utils.py:unpack_data cuts each packed row into micro_bsz sequences of exactly seq_len")
    if model.get("dtype", "torch.float16") not in DTYPES:
        bad("model.dtype", f"dtype {model.get('dtype')!r} is not supported",
            "args_sanity_check: dtype in torch.float16/half/bfloat16/float32/tf32")
    checkpoint = model.get("checkpoint", 0)
    if checkpoint is not True and checkpoint is not False and not 0 <= checkpoint <= 1:
        bad("model.checkpoint", f"activation checkpoint share {checkpoint} is not within [0, 1]",
            "args_sanity_check: model.checkpoint >= 0 and <= 1")
    chunks = model.get("num_chunks", 1)
    if chunks > 1 and not par.get("pipeline", {}).get("interleaved_overlap", False):
        bad("parallel.pipeline.interleaved_overlap", "num_chunks > 1 needs interleaved_overlap",
            "args_sanity_check: only interleaved pipeline scheduler with overlap")
    if chunks > 1 and pp == 1:
        bad("parallel.pipeline.num_chunks", f"num_chunks {chunks} needs a pipeline (pipeline size is 1)",
            "initialize_trainer: only the pipeline scheduler runs model chunks")
    if chunks > 1 and pp > 1 and data.get("micro_num", 1) % pp:
        bad("data.micro_num", f"the interleaved pipeline needs micro_num {data.get('micro_num', 1)} to be a multiple "
            f"of the pipeline size {pp}",
            "InterleavedPipelineScheduler: num_microbatches % pipeline parallel size == 0")
    out += _sequence_parallel_rules(mode, tp, wp, bool(packed), data.get("micro_bsz", 1))
    if ckpt.get("enable_save_ckpt", True):
        if not ckpt.get("checkpoint_every", 0) or ckpt["checkpoint_every"] <= 0:
            bad("ckpt.checkpoint_every", "saving checkpoints needs checkpoint_every > 0",
                "args_sanity_check: checkpoint_every > 0 when enable_save_ckpt")
        if not ckpt.get("save_ckpt_folder"):
            bad("ckpt.save_ckpt_folder", "saving checkpoints needs save_ckpt_folder",
                "args_sanity_check: save_ckpt_folder is required when enable_save_ckpt")
    if data.get("seq_len") is None or data.get("micro_bsz") is None:
        bad("data.seq_len", "seq_len and micro_bsz must be given", "args_sanity_check: seq_len and micro_bsz")
    if pp == 1 and "gradient_accumulation" in data and data["gradient_accumulation"] != data.get("micro_num", 1):
        bad("data.micro_num", "without pipeline parallel, gradient_accumulation must equal micro_num",
            "args_sanity_check: for nopp 'gradient_accumulation' should equal with 'micro_num'")
    if pp > 1 and data.get("micro_num", 1) % data.get("micro_bsz", 1):
        bad("data.micro_num", f"with pipeline parallel, micro_num {data.get('micro_num', 1)} must be a multiple of "
            f"micro_bsz {data.get('micro_bsz', 1)}",
            "data/tokenized/batch_sampler.py (StaticBatchSampler): batch_size % micro_bsz == 0 under pipeline "
            "parallel")
    out += _shape_rules(model, tp, pp, mode, chunks)
    return out


def _sequence_parallel_rules(mode: str, tp: int, wp: int, packed: bool, micro_bsz: int) -> list:
    """Layouts InternEvo 0.5.2 runs but computes wrongly (measured on CPU with NCCL's collective layout;
    see docs/pretrain.md)."""
    out = []
    if mode == "isp" and wp > 1 and tp == 1:
        out.append(("parallel.tensor.size",
                    f"isp with weight parallel {wp} needs tensor size > 1: with tensor size 1 the layer-norm "
                    "weights are trained separately on each weight-parallel rank and drift apart",
                    "hybrid_zero_optim.py reduces layer-norm gradients over the weight-parallel group only under "
                    "is_using_sequence_parallel() (tensor size > 1); otherwise only over weight-data parallel"))
    if mode == "isp" and tp > 1 and not packed:
        out.append(("parallel.tensor.mode",
                    f"isp over {tp} sequence-parallel ranks needs packed data (use_flash_attn): unpacked batches "
                    "lose their position indexes and every rank applies RoPE from position 0",
                    "data/utils.py: unpack_data drops `indexes`; only packed_data_normalizer splits them for isp"))
    elif mode in ("msp", "fsp", "isp") and tp > 1 and not packed and micro_bsz > 1:
        out.append(("data.micro_bsz",
                    f"sequence parallel ({mode}) over {tp} ranks without packed data needs micro_bsz 1 (it is "
                    f"{micro_bsz}): the gathered activations interleave the batch rows",
                    "core/parallel/comm/utils.py: all_gather_raw gathers [micro_bsz, seq/tp, h] blocks end to end "
                    "into a [micro_bsz, seq, h] buffer, which is a gather along the sequence only for one row"))
    return out


def _shape_rules(model: dict, tp: int, pp: int, mode: str, chunks: int = 1) -> list[tuple[str, str, str]]:
    out = []
    h, heads = model.get("hidden_size", 0), model.get("num_attention_heads", 1)
    kv = model.get("num_kv_attention_heads", heads)
    if h % heads:
        out.append(("model.hidden_size", f"hidden_size {h} is not a multiple of num_attention_heads {heads}",
                    "modules/mha.py: head_dim = hidden_size // num_heads"))
    if heads % kv:
        out.append(("model.num_kv_attention_heads",
                    f"num_attention_heads {heads} is not a multiple of num_kv_attention_heads {kv}",
                    "modules/mha.py (GQA): q_per_kv = num_heads // num_kv_heads"))
    if tp > 1:
        what = "sequence-parallel (isp)" if mode == "isp" else "tensor-parallel"
        for key, n in (("num_attention_heads", heads), ("num_kv_attention_heads", kv)):
            if n % tp:
                out.append((f"model.{key}", f"{key} {n} cannot be split over {tp} {what} ranks",
                            "modules/mha.py: heads are sharded evenly over the tensor-parallel group"))
        if mode != "isp" and model.get("vocab_size", 0) % tp:
            out.append(("model.vocab_size", f"vocab_size {model.get('vocab_size')} cannot be split over {tp} "
                        "tensor-parallel ranks", "the output head is a column-parallel linear over the vocabulary"))
        if h % tp:
            out.append(("model.hidden_size", f"hidden_size {h} cannot be split over {tp} ranks",
                        "Embedding1D (embed_split_hidden) shards the hidden dimension"))
    layers = model.get("num_layers", 0)
    if chunks > 1 and layers % chunks:
        out.append(("model.num_layers", f"{layers} layers cannot be cut into {chunks} model chunks",
                    "partition_uniform: num_layers % num_chunks == 0"))
    elif pp > layers // max(1, chunks):
        what = f"{layers // chunks} layers per chunk" if chunks > 1 else f"{layers} layers"
        out.append(("model.num_layers", f"{what} cannot fill {pp} pipeline stages",
                    "partition_uniform gives every pipeline stage at least one layer per chunk"))
    return out


def tokenizer_size(tokenizer_json: dict) -> int:
    """Number of token ids a tokenizer.json can produce (BPE/WordPiece dict or Unigram list, plus added tokens)."""
    vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
    n = max(vocab.values()) + 1 if isinstance(vocab, dict) and vocab else len(vocab)
    for token in tokenizer_json.get("added_tokens") or []:
        n = max(n, token["id"] + 1)
    return n


def human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)

