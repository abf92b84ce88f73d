"""`ichain eval --model … --datasets …`: the flags become a one-stage chain file, run like any other.

The file is written next to the outputs (`<output>/eval-chain.yaml`), so the run is reproducible with
`ichain eval -c <output>/eval-chain.yaml` and errors point at a real file and field.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from internlm_chain.errors import ChainError, Problem


def chain_from_flags(*, models: list[str], model_type: str, endpoints: list[str], served_names: list[str],
                     tokenizer: str | None, api_key_env: str | None, datasets: str | None, data_dir: str | None, custom: list[str],
                     limit: int | None, max_out_len: int | None, batch_size: int | None, device: str | None,
                     output: Path, python: str | None, dry_run: bool) -> Path:
    if model_type not in ("chat", "base"):
        raise ChainError(Problem(f"--model-type must be chat or base, not '{model_type}'"))
    if len(served_names) != len(endpoints):
        raise ChainError(Problem("every --endpoint needs its --served-name (in the same order)",
                                 hint=f"got {len(endpoints)} endpoint(s) and {len(served_names)} name(s)"))
    if not models and not endpoints:
        raise ChainError(Problem("nothing to evaluate", hint="pass --model PATH or --endpoint URL --served-name NAME"))
    cwd = Path.cwd()

    def absolute(p: str) -> str:
        path = Path(os.path.expanduser(p))
        return str(path if path.is_absolute() else (cwd / path).resolve())

    out = Path(absolute(str(output)))
    stage: dict = {"models": [{"path": absolute(m), "type": model_type} for m in models]}
    if endpoints:
        extra: dict = {"tokenizer_path": absolute(tokenizer)} if tokenizer else {}
        if api_key_env:
            extra["api_key_env"] = api_key_env
        stage["endpoints"] = [{"url": u, "served_name": n, **extra} for u, n in zip(endpoints, served_names, strict=True)]
    names = [d.strip() for d in (datasets or "").split(",") if d.strip()]
    if names:
        stage["datasets"] = names
    if data_dir:
        stage["data_dir"] = absolute(data_dir)
    if custom:
        stage["custom"] = [{"path": absolute(c)} for c in custom]
    for key, value in (("limit", limit), ("max_out_len", max_out_len), ("batch_size", batch_size)):
        if value is not None:
            stage[key] = value
    doc: dict = {"name": "eval", "workdir": str(out)}
    if device:
        doc["device"] = device
    if python:
        doc["runtimes"] = {"overrides": {"opencompass": {"python": absolute(python) if os.sep in python else python}}}
    doc["stages"] = {"eval": stage}
    text = "# Written by `ichain eval` from its flags; re-run with `ichain eval -c THIS_FILE`.\n"
    text += yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if dry_run:  # a dry-run leaves nothing behind in the output folder
        folder = Path(tempfile.mkdtemp(prefix="ichain-eval-"))
    else:
        folder = out
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / "eval-chain.yaml"
    path.write_text(text, encoding="utf-8")
    return path
