"""The CLI as a user drives it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import run_cli
from internlm_chain import __version__


def test_version(capsys):
    r = run_cli(capsys, "--version")
    assert r.code == 0 and r.out.strip() == f"internlm-chain {__version__}"


def test_validate_ok_and_json(capsys, write_chain):
    path = write_chain("name: demo\nstages:\n  data: {demo_corpus: 10}\n")
    r = run_cli(capsys, "config", "validate", path)
    assert r.code == 0 and "valid (stages: data)" in r.err
    r = run_cli(capsys, "config", "validate", path, "--json")
    assert r.code == 0 and json.loads(r.out) == {"valid": True, "problems": [], "stages": ["data"]}


def test_validate_errors_exit_2_without_traceback(capsys, write_chain):
    path = write_chain("name: demo\ndevce: cpu\nlauncher: {nnodes: 0}\n")
    r = run_cli(capsys, "config", "validate", path)
    assert r.code == 2
    assert "chain.yaml:2: devce: unknown key 'devce' (did you mean 'device'?)" in r.err
    assert "launcher.nnodes" in r.err and "2 problems found" in r.err
    assert "Traceback" not in r.err + r.out
    r = run_cli(capsys, "config", "validate", path, "--json")
    data = json.loads(r.out)
    assert r.code == 2 and not data["valid"] and {p["path"] for p in data["problems"]} == {"devce", "launcher.nnodes"}


def test_validate_with_set(capsys, write_chain):
    path = write_chain("name: demo\n")
    r = run_cli(capsys, "config", "validate", path, "--set", "device=gpu")
    assert r.code == 2 and "--set device=gpu: device" in r.err


def test_debug_shows_traceback(write_chain):
    path = write_chain("name: demo\ndevce: cpu\n")
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "--debug", "config", "validate", str(path)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr and "ChainError" in res.stderr


def test_show_raw_and_resolved(capsys, write_chain):
    path = write_chain("name: demo\ndevice: ${DEV:-cpu}\n")
    r = run_cli(capsys, "config", "show", path, "--json")
    assert json.loads(r.out) == {"name": "demo", "device": "cpu"}
    r = run_cli(capsys, "config", "show", path, "--resolved", "--json")
    data = json.loads(r.out)
    assert data["launcher"]["kind"] == "local" and data["workdir"].endswith("runs/demo")
    r = run_cli(capsys, "config", "show", path)
    assert "name: demo" in r.out


def test_schema_json_and_markdown(capsys):
    r = run_cli(capsys, "config", "schema")
    schema = json.loads(r.out)
    assert r.code == 0 and set(schema["properties"]) >= {"name", "workdir", "device", "model", "stages", "include"}
    r = run_cli(capsys, "config", "schema", "--markdown")
    assert r.code == 0 and "# Chain file reference" in r.out and "| `device` |" in r.out


def test_init_writes_and_refuses_to_overwrite(capsys, tmp_path):
    r = run_cli(capsys, "init", tmp_path / "proj")
    assert r.code == 0 and (tmp_path / "proj" / "quickstart.yaml").exists()
    r = run_cli(capsys, "config", "validate", tmp_path / "proj" / "quickstart.yaml")
    assert r.code == 0, r.err
    r = run_cli(capsys, "init", tmp_path / "proj")
    assert r.code == 2 and "already exists" in r.err
    r = run_cli(capsys, "init", tmp_path / "p2", "--template", "nope")
    assert r.code == 2 and "no starter chain named 'nope'" in r.err


def test_init_list_needs_no_dir_and_says_what_each_starter_is(capsys):
    r = run_cli(capsys, "init", "--list")
    assert r.code == 0, r.err
    rows = dict(line.split(None, 1) for line in r.out.strip().splitlines())
    assert "quickstart" in rows and rows["quickstart"].startswith("The quickstart chain")
    assert all(summary.strip() for summary in rows.values())
    r = run_cli(capsys, "init")
    assert r.code == 2 and "missing DIR" in r.err and "Traceback" not in r.err


def test_stage_verb_needs_a_config(capsys):
    r = run_cli(capsys, "finetune")
    assert r.code == 2 and "needs a chain file" in r.err


def test_stage_verb_on_a_stage_missing_from_the_chain(capsys, write_chain):
    path = write_chain("name: demo\n")
    r = run_cli(capsys, "pretrain", "-c", path, "--dry-run")
    assert r.code == 2 and "stage 'pretrain' is not in the chain file" in r.err


def test_usage_error_is_clean(capsys):
    r = run_cli(capsys, "config", "validate")
    assert r.code == 2 and "Traceback" not in r.err


def test_one_error_per_cause_for_a_reference_the_producer_cannot_fill(capsys):
    """merge: false leaves finetune without `model`; eval and deploy refer to it: one error each, not two."""
    from pathlib import Path

    chain = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    r = run_cli(capsys, "config", "validate", chain, "--set", "stages.finetune.merge=false")
    assert r.code == 2
    lines = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert [line.split(": ")[2] for line in lines] == ["stages.eval.models.1.path", "stages.deploy.model"], r.err
    assert all("yields no `model` output" in line for line in lines) and "does not exist yet" not in r.err


def test_flag_errors_name_the_flag_the_user_typed(capsys):
    from pathlib import Path

    chain = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    r = run_cli(capsys, "deploy", "serve", "-c", chain, "--port", "99999999", "--dry-run")
    assert r.code == 2 and r.err.startswith("error: --port: stages.deploy.port:"), r.err
    r = run_cli(capsys, "run", chain, "--launcher", "bogus", "--dry-run")
    assert r.code == 2 and r.err.strip() == "error: --launcher: 'bogus' is not a launcher (local, torchrun, slurm)"
    r = run_cli(capsys, "run", chain, "--nnodes", "0", "--dry-run")
    assert r.code == 2 and "error: --nnodes: stages." in r.err and "--set" not in r.err, r.err
    # a real --set still says --set
    r = run_cli(capsys, "deploy", "serve", "-c", chain, "--set", "stages.deploy.port=0", "--dry-run")
    assert r.code == 2 and r.err.startswith("error: --set stages.deploy.port=0: stages.deploy.port:"), r.err
