"""`ichain --help` must not import torch, transformers or any upstream package."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "transformers", "datatrove", "xtuner", "opencompass", "lmdeploy", "lagent", "agentlego",
         "internlm", "numpy", "mmengine", "jinja2"]


def test_cli_import_pulls_in_no_heavy_module():
    code = ("import sys, json; import internlm_chain.cli.app as a;"
            "a.app; print(json.dumps(sorted(m for m in sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(res.stdout))
    assert not [m for m in HEAVY if m in loaded]


def test_help_runs_and_lists_every_verb():
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for verb in ("config", "init", "run", "status", "env", "data", "pretrain", "finetune", "eval", "deploy", "agent"):
        assert verb in res.stdout
