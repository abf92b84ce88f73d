"""Write an XTuner checkpoint (.pth) without training: build the model the XTuner config describes with
XTuner's own builder, give its trainable weights random values, and save its state dict the way mmengine's
CheckpointHook does ({"meta", "state_dict"}). Runs in the xtuner runtime.

    python make_checkpoint.py XTUNER_CONFIG OUT.pth [--seed 0]
"""

import argparse
import json

import torch

torch.cpu.is_bf16_supported = lambda: False  # as the rendered CPU configs do (XTuner asks before building)

from mmengine.config import Config  # noqa: E402
from xtuner.registry import BUILDER  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("out")
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
cfg = Config.fromfile(a.config)
model = BUILDER.build(cfg.model)
with torch.no_grad():
    for p in model.parameters():
        if p.requires_grad:
            p.normal_(0.0, 0.2)
state = model.state_dict()  # XTuner's SupervisedFinetune keeps only the trainable (LoRA) weights for LoRA
torch.save({"meta": {"iter": 1}, "state_dict": state}, a.out)
print(json.dumps({"out": a.out, "tensors": len(state), "parameters": sum(t.numel() for t in state.values()),
                  "keys": sorted(state)[:2]}))
