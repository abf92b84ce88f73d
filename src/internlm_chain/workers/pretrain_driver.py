"""internlm-chain's InternEvo training driver (runs inside the `internevo` runtime).

InternEvo's wheel ships no train.py; this drives its public API in the order its own trainer does:
initialize_distributed_env → initialize_model → initialize_parallel_communicator → loss, data
loader, TrainState → initialize_optimizer → CheckpointManager.try_resume_training →
initialize_trainer → per step load_new_batch / zero_grad / execute_schedule / step /
try_save_checkpoint.

Launch: `torchrun … pretrain_driver.py --config C --launcher torch` (a single process works too:
the torch variables default to a one-process world), or `srun … python pretrain_driver.py --config
C --launcher slurm --port P`.

`--device cpu` is a smoke mode for CI and laptops (InternEvo has no CPU device): gloo instead of
NCCL, the CPU RNG state instead of CUDA's, no-op CUDA streams/events, fp32, tiny models only.

Every step appends one JSON line to `--metrics` ({"step", "loss", "lr", "grad_norm", "tokens", ...});
the stage's collect reads it. stdlib + the runtime's packages only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_rules  # noqa: E402  (our own modules next to this file)
from pretrain_compat import cpu_smoke_patches, fix_bracketed_ipv4, probe_input_ids  # noqa: E402

SMOKE = "[smoke mode: CPU, gloo, tiny model — proves the plumbing, not a real pre-training run]"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--launcher", choices=["torch", "slurm"], default="torch")
    p.add_argument("--port", type=int, default=None, help="Master port (slurm launcher; torch: default port).")
    p.add_argument("--seed", type=int, default=1024)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--metrics", required=True, help="JSON-lines file, one record per step.")
    p.add_argument("--tokenizer", default=None, help="Tokenizer dir: its size is checked against vocab_size.")
    p.add_argument("--probe-out", default=None, help="Save the trained (sharded) model's logits on the probe "
                                                     "batch here, for checking the merged HF model.")
    return p.parse_args(argv)


# ---- fixes applied before InternEvo starts --------------------------------------------------------

def single_process_defaults(port: int | None) -> None:
    """`--launcher torch` without torchrun: a world of one on this host."""
    if "RANK" in os.environ:
        return
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port or _free_port())})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- checks before the (expensive) start ------------------------------------------------------------

def preflight(args) -> None:
    from internlm.core.context import Config

    cfg = Config.from_file(args.config)
    model = dict(cfg.model)
    if args.device == "cpu":
        n = pretrain_rules.param_count(model)
        if n > pretrain_rules.SMOKE_MAX_PARAMS:
            fail(f"smoke mode refuses a {pretrain_rules.human(n)}-parameter model "
                 f"(bound {pretrain_rules.human(pretrain_rules.SMOKE_MAX_PARAMS)}): use a GPU or a tiny shape")
    if args.tokenizer:
        path = os.path.join(args.tokenizer, "tokenizer.json")
        try:
            with open(path, encoding="utf-8") as f:
                size = pretrain_rules.tokenizer_size(json.load(f))
        except (OSError, ValueError) as exc:
            fail(f"cannot read {path}: {exc}")
        if size > model["vocab_size"]:
            fail(f"the tokenizer has {size} tokens but model vocab_size is {model['vocab_size']}")
    if model.get("use_flash_attn"):
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            fail("use_flash_attn is set but flash-attn is not installed in this runtime: build it into the "
                 "internevo runtime on the GPU host, or set use_flash_attn: false")
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NPROCS") or 1)
    findings = pretrain_rules.check(_plain(cfg), world)
    if findings:
        fail("; ".join(f"{key or 'config'}: {msg} (InternEvo rule — {rule})" for key, msg, rule in findings))
    folder = cfg.data.get("train_folder")
    if folder and not any(f.endswith(".bin") for _, _, files in os.walk(folder) for f in files):
        fail(f"no .bin files under {folder}")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def fail(message: str) -> None:
    print(f"pretrain_driver: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---- training ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        print(SMOKE, flush=True)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # smoke mode means CPU even on a GPU host
    # InternEvo's checkpoints pickle its own classes (ParallelMode, sampler state); torch >= 2.6 loads
    # weights-only by default and refuses them. These are files this run wrote itself.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    fix_bracketed_ipv4()
    if args.launcher == "torch":
        single_process_defaults(args.port)
    preflight(args)
    if args.device == "cpu":
        cpu_smoke_patches()

    import internlm  # after the patches: InternEvo modules read the accelerator at import
    from internlm.checkpoint import CheckpointManager
    from internlm.core.context import ParallelMode
    from internlm.core.context import global_context as gpc
    from internlm.core.trainer import TrainState
    from internlm.data import build_train_loader_with_data_type
    from internlm.initialize import initialize_distributed_env
    from internlm.model.losses import FlashGPTLMLoss
    from internlm.train import initialize_model, initialize_optimizer, initialize_parallel_communicator
    from internlm.utils.common import launch_time

    initialize_distributed_env(config=args.config, launcher=args.launcher,
                               master_port=args.port or 8888, seed=args.seed)
    rank0 = gpc.get_global_rank() == 0
    total_steps = gpc.config.data.total_steps
    current_time = _broadcast(launch_time())

    model = initialize_model()
    initialize_parallel_communicator(model)
    criterion = FlashGPTLMLoss(parallel_output=gpc.config.model.parallel_output, label_smoothing=0)
    train_dl, _ = build_train_loader_with_data_type()
    train_state = TrainState(gpc.config, train_dl.batch_sampler)
    optimizer, beta2_scheduler, lr_scheduler = initialize_optimizer(model=model)
    with open(args.config, encoding="utf-8") as f:
        config_text = f.read()
    ckpt_manager = CheckpointManager(
        ckpt_config=gpc.config.ckpt, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
        train_dl=train_dl, model_config=gpc.config.model, model_config_file=config_text,
        feishu_address=None)
    ckpt_manager.try_resume_training(train_state, current_time)
    start = train_state.batch_count
    if rank0 and start:
        print(f"pretrain_driver: resumed at step {start} from {gpc.config.ckpt.save_ckpt_folder}", flush=True)

    trainer, train_dl, _, _ = internlm.initialize_trainer(
        model=model, optimizer=optimizer, criterion=criterion, train_dataloader=train_dl,
        lr_scheduler=lr_scheduler, beta2_scheduler=beta2_scheduler, scheduler_hooks=[])
    trainer.train()
    train_iter = iter(train_dl)
    # the loss exists on the last pipeline stage; one of its ranks writes it
    writer = (gpc.is_no_pp_or_last_stage() and gpc.get_local_rank(ParallelMode.DATA) == 0
              and gpc.get_local_rank(ParallelMode.TENSOR) == 0)
    metrics = open(args.metrics, "a", encoding="utf-8") if writer else None
    for batch_count in range(start, total_steps):
        t0 = time.time()
        train_state.batch_count = batch_count
        batch, train_iter = _load_new_batch(train_dl, train_iter, train_state)
        batch[0].pop("type_ids", None)  # only metric hooks read it; the model's forward rejects it
        trainer.zero_grad()
        _, _, loss = trainer.execute_schedule(batch, forward_only=False, return_loss=True,
                                              return_output_label=False)
        success, grad_norms = trainer.step()
        if success:
            train_state.step_count += 1
        else:
            train_state.inf_nan_skip_batches += 1
        if metrics is not None:
            record = {"step": batch_count + 1, "loss": float(loss), "lr": optimizer.param_groups[0]["lr"],
                      "grad_norm": _grad_norm(grad_norms), "skipped": not success,
                      "tokens": int(batch[0]["input_ids"].numel()), "seconds": round(time.time() - t0, 3),
                      "smoke": args.device == "cpu", "pid": os.getpid()}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            print(f"step {record['step']}/{total_steps} loss {record['loss']:.4f} lr {record['lr']:.3g}",
                  flush=True)
        if ckpt_manager.try_save_checkpoint(train_state):
            break
    ckpt_manager.wait_async_upload_finish()
    if args.probe_out:
        _save_probe(model, args.probe_out, writer)
    if metrics is not None:
        metrics.close()
        print("pretrain_driver: done" + (" " + SMOKE if args.device == "cpu" else ""), flush=True)
    return 0


def _save_probe(model, path: str, writer: bool) -> None:
    """Logits of the model as trained — still sharded over its ranks — on the probe batch.

    Compared with the merged HF model, this checks the shard merge itself, not just the layout.
    - No pipeline: one forward call. Under msp/fsp/isp the embedding splits the sequence over the tensor
      group and the head gathers it back, with parallel_output off the logits are whole on every rank.
    - Pipeline (interleaved too): the stages' model chunks run in forward order, the hidden state is
      broadcast from each stage to all ranks. Not under sequence parallel with tensor size > 1, where a
      stage's hidden state is itself split over the tensor group.
    """
    import numpy as np
    import torch
    from internlm.core.context import ParallelMode
    from internlm.core.context import global_context as gpc
    from internlm.utils.common import get_current_device

    pp = gpc.get_world_size(ParallelMode.PIPELINE)
    tp = gpc.get_world_size(ParallelMode.TENSOR)
    if gpc.config.model.get("parallel_output", False):
        return  # vocab-sharded logits: the head does not gather them
    if pp > 1 and gpc.config.parallel.tensor.mode != "mtp" and tp > 1:
        return
    ids = probe_input_ids(gpc.config.model.vocab_size).to(get_current_device())
    kwargs = {}
    if gpc.config.parallel.tensor.mode != "mtp" and tp > 1:
        # one row: sequence-parallel gathers lay rank blocks end to end (see pretrain_rules); under isp the
        # positions are split over the tensor group the way packed_data_normalizer splits them
        ids = ids[:1]
        if gpc.config.parallel.tensor.mode == "isp":
            kwargs["indexes"] = torch.arange(ids.shape[1], device=ids.device).chunk(tp)[
                gpc.get_local_rank(ParallelMode.TENSOR)]
    chunks = list(model) if isinstance(model, torch.nn.ModuleList) else [model]
    for chunk in chunks:
        chunk.eval()
    with torch.no_grad():
        if pp == 1:
            logits = chunks[0](input_ids=ids, **kwargs)
        else:
            logits = _staged_forward(chunks, ids, pp)
    if writer:
        np.savez(path, input_ids=ids.cpu().numpy(), logits=logits.float().cpu().numpy(),
                 dtype=np.array(str(gpc.config.model.dtype)))


def _staged_forward(chunks, ids, pp: int):
    """Chunk c of stage p holds the c-th block of layers' p-th part (partition_uniform): run them in the
    order (c, p); every rank of stage p runs its chunk (its tensor group takes part), then the first rank
    of the stage (ranks are laid out pipeline-outermost) broadcasts the result to everyone."""
    import torch.distributed as dist
    from internlm.core.context import ParallelMode
    from internlm.core.context import global_context as gpc

    stage = gpc.get_local_rank(ParallelMode.PIPELINE)
    per_stage = gpc.get_world_size(ParallelMode.GLOBAL) // pp
    hidden = None
    for c in range(len(chunks)):
        for p in range(pp):
            out = [None]
            if p == stage:
                first = c == 0 and p == 0
                result = chunks[c](input_ids=ids) if first else chunks[c](hidden_states=hidden)
                out = [result.cpu()]
            dist.broadcast_object_list(out, src=p * per_stage)
            hidden = out[0].to(ids.device)
    return hidden


def _load_new_batch(train_dl, train_iter, train_state):
    from internlm.train import load_new_batch

    batch, train_iter = load_new_batch(train_dl=train_dl, train_iter=train_iter, train_state=train_state)
    return batch, train_iter


def _broadcast(value):
    import torch.distributed as dist

    objs = [value]
    dist.broadcast_object_list(objs, src=0)
    return objs[0]


def _grad_norm(norms) -> float | None:
    values = [float(v) for v in (norms or {}).values() if v is not None and float(v) >= 0]
    return max(values) if values else None


if __name__ == "__main__":
    sys.exit(main())
