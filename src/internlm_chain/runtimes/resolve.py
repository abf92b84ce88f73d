"""Resolve a runtime name to the argv prefix that runs its Python (no side effects)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic stays unimported on the `ichain env` paths that need no chain file
    from internlm_chain.config.base import RuntimeSpec
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
        return image_argv(spec.image, spec.engine, chain.workdir, device)
    return [python]


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # workers/ and templates/ run from here


def image_argv(image: str, engine: str, workdir: Path, device: str) -> list[str]:
    """`python` inside a container that sees the workdir and this package's worker scripts (same paths)."""
    binds = [str(workdir), f"{PACKAGE_DIR}:{PACKAGE_DIR}:ro"]
    if engine == "docker":
        gpus = ["--gpus", "all"] if device == "cuda" else []
        # --ipc host: PyTorch data loaders and NCCL need more shared memory than docker's 64 MB default
        return ["docker", "run", "--rm", "--network", "host", "--ipc", "host", *gpus,
                "-v", f"{workdir}:{workdir}", "-v", binds[1], "-w", str(workdir), image, "python"]
    nv = ["--nv"] if device == "cuda" else []
    return ["apptainer", "exec", *nv, "--bind", ",".join(binds), image, "python"]


def wrap_job_env(argv: list[str], env: dict[str, str], cwd: str | None = None) -> list[str]:
    """For a `docker run` argv: pass the job's env keys through (`-e KEY`) and run in its cwd.

    Docker, unlike Apptainer, neither inherits the caller's environment nor its working directory, so
    a launcher starting a Job whose argv begins with `docker run` calls this with the Job's env and cwd.
    """
    if argv[:2] != ["docker", "run"]:
        return list(argv)
    head, rest = argv[:2], list(argv[2:])
    if cwd and "-w" in rest:
        rest[rest.index("-w") + 1] = str(cwd)
    return [*head, *[a for k in sorted(env) for a in ("-e", k)], *rest]


LOCKS_DIR = Path(__file__).parent / "locks"


def locks_root() -> Path:
    """The shipped locks, or $ICHAIN_LOCKS_DIR (to try a lock before shipping it, and for tests)."""
    override = os.environ.get("ICHAIN_LOCKS_DIR")
    return Path(override).expanduser().resolve() if override else LOCKS_DIR


def variant_for(chain: LoadedChain | None, device: str, spec: RuntimeSpec | None = None) -> str:
    if spec and spec.variant:
        return spec.variant
    if chain and chain.config.runtimes.variant:
        return chain.config.runtimes.variant
    return "cuda" if device == "cuda" else "cpu"


def lock_file(runtime: str, variant: str) -> Path:
    """The lock shipped for `runtime`; a runtime without a CUDA-specific lock uses its CPU one."""
    root = locks_root()
    exact = root / f"{runtime}-{variant}.txt"
    return exact if exact.exists() else root / f"{runtime}-cpu.txt"


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
