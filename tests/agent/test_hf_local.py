"""A local Hugging Face model in-process (Lagent's HF wrapper through our glue), with the tiny model.

The agent runtime's CPU lock carries torch + transformers 4.41 for this path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from agent_helpers import WORKERS, agentrun

pytestmark = pytest.mark.upstream


@pytest.fixture(scope="module")
def hf_python() -> Path:
    from tests.conftest import runtime_python

    return runtime_python("agent")


def test_tiny_model_in_process_ends_cleanly_at_the_turn_limit(hf_python, tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([str(hf_python), str(WORKERS / "tiny_model.py"), str(model)], check=True, timeout=300)
    spec = {"agent": "react", "llm": {"hf_model": str(model)}, "tools": ["Calculator"], "max_turns": 2,
            "generation": {"max_new_tokens": 8}}
    proc, out = agentrun(hf_python, spec, "run", "-q", "What is 2+2?", tmp=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    t = out["transcripts"][0]
    # a random model cannot follow the protocol: it must still end at the limit, not crash
    assert t["stop_reason"] == "turn_limit" and t["llm_calls"] == 2 and t["error"] is None
