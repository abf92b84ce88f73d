"""`chat`: talk to a local model (optionally with an adapter) in the terminal, in the xtuner runtime.

The reply streams on the worker's stdout and lines are read from our stdin, so the job runs attached to
the terminal (no log file): the one verb whose job is not captured."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from internlm_chain.chain.job import Job
from internlm_chain.models import common

DEFAULT_TEMPLATE = "internlm2_chat"  # the chain's default `model.chat_template`


@dataclass(frozen=True)
class ChatPlan:
    model: Path
    adapter: Path | None
    template: str
    device: str
    python: list[str]
    messages: tuple[str, ...]
    system: str | None
    max_new_tokens: int
    temperature: float

    def job(self) -> Job:
        argv = [*self.python, str(common.WORKERS / "model_chat.py"), "--model", str(self.model),
                "--template", self.template, "--device", self.device, "--max-new-tokens", str(self.max_new_tokens)]
        if self.adapter is not None:
            argv += ["--adapter", str(self.adapter)]
        if self.system is not None:
            argv += ["--system", self.system]
        if self.temperature > 0:
            argv += ["--temperature", repr(self.temperature)]
        for m in self.messages:
            argv += ["--message", m]
        how = "one-shot" if self.messages else "interactive (stdin lines; an empty line ends)"
        return common.job("chat", argv, Path.cwd(), f"chat with the model, {how}", self.device)


def plan_chat(model: Path, adapter: Path | None = None, messages: tuple[str, ...] | list[str] = (),
              system: str | None = None, max_new_tokens: int = 256, template: str | None = None,
              device: str = "auto", temperature: float = 0.0, python: str | None = None) -> ChatPlan:
    from internlm_chain.stages.finetune.settings import XTUNER_TEMPLATES

    model_path = common.model_dir(model, "MODEL")
    adapter_path = common.adapter_dir(adapter)[0] if adapter is not None else None
    name = template or DEFAULT_TEMPLATE
    if name not in XTUNER_TEMPLATES:
        raise common.fail("--template", f"'{name}' is not an XTuner prompt template",
                          "e.g. internlm2_chat, llama3_chat, qwen_chat")
    if max_new_tokens < 1:
        raise common.fail("--max-new-tokens", f"{max_new_tokens} is not a positive number")
    if temperature < 0:
        raise common.fail("--temperature", f"{temperature} is negative", "0 means greedy")
    return ChatPlan(model_path, adapter_path, name, common.resolve_device(device), common.python_argv(python),
                    tuple(messages), system, max_new_tokens, temperature)


def chat(model: Path, adapter: Path | None = None, messages: tuple[str, ...] | list[str] = (),
         system: str | None = None, max_new_tokens: int = 256, template: str | None = None, device: str = "auto",
         temperature: float = 0.0, python: str | None = None) -> int:
    """Chat with `model` on this terminal: one-shot with `messages` (each a user turn, replies printed),
    interactive otherwise. Returns the worker's exit code."""
    plan = plan_chat(model, adapter, messages, system, max_new_tokens, template, device, temperature, python)
    common.check_runtime(plan.python, python is not None)
    job = plan.job()
    return subprocess.run(job.argv, cwd=job.cwd, env={**os.environ, **job.env}).returncode
