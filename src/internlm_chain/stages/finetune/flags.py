"""`ichain finetune --model … --data …`: a one-stage chain held in memory, run by the same runner.

Each value remembers the flag it came from, so a bad one is reported as `--data: …` just as a chain
file's would be reported as `file:line`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from internlm_chain.config.loader import LoadedChain, chain_from_document
from internlm_chain.config.merge import apply_override
from internlm_chain.config.source import Located, Location


def chain_from_flags(values: dict, overrides: Sequence[str] = (), device: str | None = None,
                     python: str | None = None, out: Path | None = None) -> LoadedChain:
    cwd = Path.cwd()
    workdir = (out or Path("runs") / "finetune").expanduser()
    workdir = workdir if workdir.is_absolute() else cwd / workdir
    section = dict(values)
    data: dict = {"name": "finetune", "workdir": str(workdir), "device": device or "auto",
                  "stages": {"finetune": section}}
    locations = {(): Location("ichain finetune")}
    for key in values:
        locations[("stages", "finetune", key)] = Location("--" + key.replace("_", "-"))
    if device:
        locations[("device",)] = Location("--device")
    if python:
        data["runtimes"] = {"overrides": {"xtuner": {"python": python}}}
        locations[("runtimes",)] = Location("--python")
    doc = Located(data, locations)
    for text in overrides:
        apply_override(doc, text)
    # the chain "file" sits in the current directory, so relative --model/--data resolve from there
    return chain_from_document(doc, cwd / "ichain-finetune-flags.yaml")
