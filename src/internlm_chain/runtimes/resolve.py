"""Resolve a runtime name to the argv prefix that runs its Python (no side effects)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from internlm_chain.config.base import RuntimeSpec

if TYPE_CHECKING:
    from internlm_chain.config.loader import LoadedChain


def cache_dir(chain: LoadedChain | None = None) -> Path:
    configured = chain.config.runtimes.cache_dir if chain else None
    root = configured or os.environ.get("ICHAIN_CACHE") or "~/.cache/internlm-chain"
    return Path(os.path.expanduser(root)).resolve()


def env_dir(name: str, chain: LoadedChain | None = None) -> Path:
    return cache_dir(chain) / "envs" / name


def runtime_spec(chain: LoadedChain, stage: str, runtime: str) -> RuntimeSpec | None:
    settings = getattr(chain.config.stages, stage, None)
    if settings is not None and settings.runtime is not None:
        return settings.runtime
    return chain.config.runtimes.overrides.get(runtime)


def interpreter_argv(chain: LoadedChain, stage: str, runtime: str, device: str) -> list[str]:
    spec = runtime_spec(chain, stage, runtime)
    if spec and spec.python:
        return [spec.python]
    python = str(env_dir(runtime, chain) / "bin" / "python")
    if spec and spec.image:
        if spec.engine == "docker":
            return ["docker", "run", "--rm", "--network", "host", "-v", f"{chain.workdir}:{chain.workdir}",
                    "-w", str(chain.workdir), spec.image, "python"]
        nv = ["--nv"] if device == "cuda" else []
        return ["apptainer", "exec", *nv, "--bind", str(chain.workdir), spec.image, "python"]
    return [python]


LOCKS_DIR = Path(__file__).parent / "locks"


def variant_for(chain: LoadedChain | None, device: str, spec: RuntimeSpec | None = None) -> str:
    if spec and spec.variant:
        return spec.variant
    if chain and chain.config.runtimes.variant:
        return chain.config.runtimes.variant
    return "cuda" if device == "cuda" else "cpu"


def lock_file(runtime: str, variant: str) -> Path:
    """The lock shipped for `runtime`; a runtime without a CUDA-specific lock uses its CPU one."""
    exact = LOCKS_DIR / f"{runtime}-{variant}.txt"
    return exact if exact.exists() else LOCKS_DIR / f"{runtime}-cpu.txt"


def lock_hash(chain: LoadedChain, stage: str, runtime: str, device: str) -> str:
    """What identifies the runtime's contents: its lock's hash, or the interpreter/image named instead."""
    import hashlib

    spec = runtime_spec(chain, stage, runtime)
    if spec and spec.python:
        return "python:" + spec.python
    if spec and spec.image:
        return "image:" + spec.image
    lock = lock_file(runtime, variant_for(chain, device, spec))
    if not lock.exists():
        return ""
    return "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()
