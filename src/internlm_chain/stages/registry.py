"""Find a stage's implementation lazily, so `ichain --help` imports none of them."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from internlm_chain.stages import STAGE_ORDER
from internlm_chain.stages.base import NotAvailableStage, Stage


def get_stage(name: str) -> Stage:
    if name not in STAGE_ORDER:
        raise KeyError(name)
    try:
        module = importlib.import_module(f"internlm_chain.stages.{name}.stage")
    except ModuleNotFoundError as exc:
        if exc.name == f"internlm_chain.stages.{name}.stage":
            return NotAvailableStage(name)
        raise
    return module.STAGE


def load_plugin(spec: str, base_dir: Path | None = None) -> Stage:
    """A stage implementation named by `stages.<stage>.plugin`: `pkg.module:NAME` or `file.py:NAME`.

    The supported way to swap a stage's code (site-specific stages; the runner's tests use it to run
    cheap stages through the real runner in a real `ichain` process).
    """
    from internlm_chain.errors import ChainError, Problem

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ChainError(Problem(f"plugin '{spec}' is not `module:NAME` or `file.py:NAME`"))
    try:
        if module_name.endswith(".py"):
            path = Path(os.path.expanduser(module_name))
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            key = "ichain_plugin_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
            module = sys.modules.get(key)
            if module is None:
                if not path.is_file():
                    raise ChainError(Problem(f"plugin file not found: {path}"))
                loader_spec = importlib.util.spec_from_file_location(key, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[key] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        obj = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ChainError(Problem(f"cannot load plugin '{spec}': {exc}")) from None
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Stage):
        raise ChainError(Problem(f"plugin '{spec}' is not a Stage (a {type(obj).__name__})"))
    return obj
