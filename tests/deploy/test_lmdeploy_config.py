"""Where the `lmdeploy` runtime is installed, its engine config objects accept what we render and reject
a wrong value on CPU. Skipped (with the reason) where it is not: it is a multi-GB GPU install."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from internlm_chain.runtimes.resolve import env_dir
from internlm_chain.stages.deploy.stage import WORKERS

pytestmark = pytest.mark.upstream


def lmdeploy_python() -> str:
    python = os.environ.get("ICHAIN_RUNTIME_LMDEPLOY") or str(env_dir("lmdeploy") / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip(f"lmdeploy runtime not installed ({python}); `ichain env sync lmdeploy` on a GPU host")
    return python


def check(settings: dict) -> dict:
    res = subprocess.run([lmdeploy_python(), str(WORKERS / "deploy_check.py"), json.dumps(settings)],
                         capture_output=True, text=True, timeout=300)
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("settings", [
    {"backend": "turbomind", "tp": 1, "quant_policy": 0, "cache_max_entry_count": 0.8, "model_format": "hf"},
    {"backend": "turbomind", "tp": 2, "quant_policy": 8, "cache_max_entry_count": 0.5, "max_batch_size": 64,
     "model_format": "hf"},
    {"backend": "turbomind", "tp": 1, "quant_policy": 0, "cache_max_entry_count": 0.8, "model_format": "awq"},
    {"backend": "pytorch", "tp": 2, "quant_policy": 4, "cache_max_entry_count": 0.6},
])
def test_engine_configs_accept_our_settings(settings):
    assert check(settings) == {"ok": True}


def test_engine_config_rejects_a_wrong_value():
    bad = {"backend": "turbomind", "tp": 1, "quant_policy": 3, "cache_max_entry_count": 0.8, "model_format": "hf"}
    result = check(bad)
    assert result["ok"] is False and result["error"]
