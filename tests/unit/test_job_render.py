"""Jobs print exactly: shell-quoted, paste-able lines; files in full with --show-files; JSON equal."""

from __future__ import annotations

import json
import shlex

from helpers import run_cli
from internlm_chain.chain.job import Job, Resources, render_jobs_json, render_jobs_text

JOB = Job(stage="finetune", name="train", argv=["/envs/xtuner/bin/python", "-m", "xtuner.tools.train",
                                               "/w/cfg file.py", "--work-dir", "/w/o'q"],
          cwd="/w", env={"B": "two words", "A": "1"}, files={"/w/cfg file.py": "x = 1\ny = 'a'\n"},
          resources=Resources(gpus_per_node=8), runtime="xtuner", distributed=True,
          expected_outputs=["/w/out"], description="LoRA SFT")


def test_command_line_is_pasteable():
    line = JOB.command_line()
    assert shlex.split(line) == ["cd", "/w", "&&", "env", "A=1", "B=two words", *JOB.argv]


def test_text_golden(golden):
    golden.check("unit/job_text.txt", render_jobs_text([JOB]))
    golden.check("unit/job_text_files.txt", render_jobs_text([JOB], show_files=True))


def test_json_has_same_content():
    [item] = json.loads(render_jobs_json([JOB]))
    assert item["argv"] == JOB.argv and item["files"] == JOB.files and item["command_line"] == JOB.command_line()
    [item] = json.loads(render_jobs_json([JOB], show_files=False))
    assert item["files"] == ["/w/cfg file.py"]


def test_chain_dry_run_golden(capsys, write_chain, golden, tmp_path):
    path = write_chain("name: demo\ndevice: cpu\nstages:\n  data: {demo_corpus: 10}\n  eval: {enabled: false}\n")
    r = run_cli(capsys, "run", path, "--dry-run", "--json")
    assert r.code == 0, r.err
    stages = [(s["stage"], s["status"]) for s in json.loads(r.out)]
    assert stages[0][0] == "data" and len(stages) == 1
    r2 = run_cli(capsys, "run", path, "--dry-run")
    assert "stage data" in r2.out
