"""Write a real InternEvo ISP checkpoint and the sharded model's own logits (run under torchrun, `internevo` runtime).

ISP cannot *train* correctly without flash attention (see docs/pretrain.md), so this does not train: it builds
InternEvo's model under the configured isp layout (real initialisation: every weight-parallel and tensor-parallel
shard differs), saves it with InternEvo's own `save_model_checkpoint` (the files, names and shapes the converter
must merge) and runs the still-sharded model forward on the probe row, the positions split over the tensor group
the way InternEvo's packed-data path splits them. The converter's merged model must reproduce those logits.

usage: torchrun --nproc-per-node N isp_checkpoint.py CONFIG OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WORKERS = Path(__file__).resolve().parents[2] / "src" / "internlm_chain" / "workers"
sys.path.insert(0, str(WORKERS))


def main() -> int:
    config, out = sys.argv[1], Path(sys.argv[2])
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    from pretrain_compat import cpu_smoke_patches, fix_bracketed_ipv4, probe_input_ids

    fix_bracketed_ipv4()
    cpu_smoke_patches()
    import numpy as np
    import torch
    from internlm.checkpoint.components import save_model_checkpoint
    from internlm.core.context import ParallelMode
    from internlm.core.context import global_context as gpc
    from internlm.initialize import initialize_distributed_env
    from internlm.train import initialize_model, initialize_parallel_communicator
    from internlm.utils.storage_manager import init_storage_manager

    initialize_distributed_env(config=config, launcher="torch", master_port=int(os.environ["MASTER_PORT"]), seed=7)
    model = initialize_model()
    initialize_parallel_communicator(model)
    init_storage_manager(True, None, False)
    step_dir = out / "checkpoints" / "1"
    step_dir.mkdir(parents=True, exist_ok=True)
    # what CheckpointManager hands to it: the model inside InternEvo's NaiveAMPModel wrapper
    save_model_checkpoint("local:" + str(step_dir), model.model if hasattr(model, "model") else model)

    tp = gpc.get_world_size(ParallelMode.TENSOR)
    ids = probe_input_ids(gpc.config.model.vocab_size)[:1]
    indexes = torch.arange(ids.shape[1]).chunk(tp)[gpc.get_local_rank(ParallelMode.TENSOR)]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, indexes=indexes).float().numpy()
    if gpc.get_global_rank() == 0:
        np.savez(out / "sharded_probe.npz", input_ids=ids.numpy(), logits=logits,
                 dtype=np.array(str(gpc.config.model.dtype)))
    torch.distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
