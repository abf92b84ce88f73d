"""Fixtures for eval tests: two different tiny models, small datasets, an ichain runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import runtime_python

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "src" / "internlm_chain" / "workers" / "tiny_model.py"

MCQ_ROWS = [
    {"question": "What is 1 + 1?", "A": "2", "B": "3", "C": "4", "D": "5", "answer": "A"},
    {"question": "Which is a colour?", "A": "dog", "B": "red", "C": "run", "D": "ten", "answer": "B"},
    {"question": "What is 2 * 3?", "A": "5", "B": "8", "C": "6", "D": "9", "answer": "C"},
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two different random tiny models (seeds 0 and 1), built in the opencompass runtime."""
    root = tmp_path_factory.mktemp("eval-models")
    python = str(runtime_python("opencompass"))
    out = []
    for seed in (0, 1):
        target = root / f"tiny{seed}"
        res = subprocess.run([python, str(TINY), str(target), "--seed", str(seed)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"tiny_model.py failed:\n{res.stdout}\n{res.stderr}", pytrace=False)
        out.append(target)
    return out[0], out[1]


@pytest.fixture
def mcq_jsonl(tmp_path) -> Path:
    path = tmp_path / "quiz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MCQ_ROWS), encoding="utf-8")
    return path


@pytest.fixture
def gsm8k_root(tmp_path) -> Path:
    """A small local copy of gsm8k in OpenCompass's layout: <root>/data/gsm8k/{train,test}.jsonl."""
    d = tmp_path / "oc-data" / "data" / "gsm8k"
    d.mkdir(parents=True)
    rows = [{"question": "Tom has 2 apples and buys 3 more. How many apples does he have?", "answer": "2+3=5\n#### 5"},
            {"question": "What is 4 times 2?", "answer": "4*2=8\n#### 8"}]
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path / "oc-data"


def ichain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          timeout=1800, env=os.environ.copy(), cwd=cwd)


def runtime_block() -> str:
    return f"runtimes:\n  overrides:\n    opencompass: {{python: {runtime_python('opencompass')}}}\n"
