"""Write a real PEFT LoRA adapter for a model folder, with random A *and* B (PEFT's default B = 0 would make
the adapter a no-op and a merge test unable to fail). Runs in the xtuner runtime.

    python make_adapter.py MODEL_DIR OUT_DIR [--r 4] [--alpha 8] [--seed 0]
"""

import argparse
import json

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--r", type=int, default=4)
ap.add_argument("--alpha", type=int, default=8)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, task_type="CAUSAL_LM", init_lora_weights=False,
                 target_modules=["q_proj", "v_proj", "down_proj"])
peft_model = get_peft_model(model, cfg)
with torch.no_grad():  # big enough to move the logits visibly
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.normal_(0.0, 0.2)
peft_model.save_pretrained(a.out)
print(json.dumps({"out": a.out, "lora_parameters": sum(p.numel() for n, p in peft_model.named_parameters()
                                                          if "lora_" in n)}))
