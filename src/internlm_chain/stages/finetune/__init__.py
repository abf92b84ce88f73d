"""The `finetune` stage."""
