"""One package per stage; each has a light `settings` module (pydantic only) and a `stage` module."""

STAGE_ORDER = ("data", "pretrain", "finetune", "eval", "deploy", "agent")
