"""The run configuration (pipeline.json, written by the stage's Job) and how steps split into passes.

Document steps stream; a global step needs the whole corpus, so it ends a pass: the pass collects
its keys per shard, the step decides once, and the next pass applies the decision. Consecutive
global steps share one pass unless an earlier one changes text (line de-duplication).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .spec import STEPS, TEXT_CHANGING, resolve_steps


@dataclass
class Segment:
    doc_steps: list[dict] = field(default_factory=list)
    global_steps: list[dict] = field(default_factory=list)


def segments(steps: list[dict]) -> list[Segment]:
    segs = [Segment()]
    for step in steps:
        cur = segs[-1]
        if STEPS[step["name"]]["kind"] == "doc":
            if cur.global_steps:
                segs.append(Segment([step]))
            else:
                cur.doc_steps.append(step)
        else:
            if cur.global_steps and cur.global_steps[-1]["name"] in TEXT_CHANGING:
                segs.append(Segment([], [step]))
            else:
                cur.global_steps.append(step)
    if segs[-1].global_steps:
        segs.append(Segment())  # the final pass applies the last decisions and writes the outputs
    return segs


@dataclass
class RunConfig:
    out_dir: str
    inputs: list[str]
    languages: list[str] = field(default_factory=lambda: ["zh", "en"])
    text_key: str = "text"
    workers: int = 1
    executor: str = "local"
    steps: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: ["clean", "internevo", "xtuner"])
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 8000
    internevo_max_bytes: int = 1 << 30
    slurm: dict = field(default_factory=dict)
    ray: dict = field(default_factory=dict)
    keep_work: bool = False  # keep the intermediate pass files after a successful run (debugging)

    @property
    def work(self) -> str:
        return os.path.join(self.out_dir, "_work")

    @property
    def segments(self) -> list[Segment]:
        return segments(self.steps)

    @classmethod
    def load(cls, path: str) -> RunConfig:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        cfg = cls(**data)
        cfg.steps = resolve_steps(cfg.steps or None)
        if cfg.workers <= 0:
            cfg.workers = os.cpu_count() or 1
        return cfg
