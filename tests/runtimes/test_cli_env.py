"""`ichain env list` and `ichain env doctor` on real envs: tables, JSON, and the problems doctor must catch."""

from __future__ import annotations

import subprocess

import pytest

from internlm_chain.runtimes.sync import uv_bin

from .conftest import TINY_LOCK


@pytest.fixture
def synced(cli):
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    res = cli("env", "sync", "tiny", "--variant", "cpu")
    assert res.returncode == 0, res.stderr
    return cli


def test_list_table_and_json(synced):
    cli = synced
    cli.lock("other-cpu.txt", "six==1.16.0\n")
    res = cli("env", "list")
    assert res.returncode == 0, res.stderr
    for word in ("runtime", "variant", "path", "synced", "lock hash", "size"):
        assert word in res.stdout
    rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.startswith("│")}
    record = cli.json("env", "list")
    tiny = next(r for r in record["runtimes"] if r["runtime"] == "tiny")
    assert tiny["synced"] is True and tiny["variant"] == "cpu" and tiny["size_bytes"] > 100_000
    assert tiny["lock_hash"].removeprefix("sha256:")[:12] in rows["tiny"]
    assert " yes " in rows["tiny"] and " no " in rows["other"]
    other = next(r for r in record["runtimes"] if r["runtime"] == "other")
    assert other["synced"] is False and other["reason"] == "not synced" and other["size_bytes"] is None


def test_doctor_ok(synced):
    res = synced("env", "doctor", "tiny")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 2 locked packages at their pinned versions" in res.stdout
    assert "`import six` works" in res.stdout and "`import idna` works" in res.stdout
    assert "machine" in res.stdout and "free for" in res.stdout
    data = synced.json("env", "doctor", "tiny")
    assert data["ok"] is True
    (tiny,) = data["runtimes"]
    assert tiny["python"].startswith("3.") and {p["name"] for p in tiny["key_packages"]} == {"six", "idna"}
    assert data["machine"]["free_bytes"] > 0 and isinstance(data["machine"]["gpus"], list)


def test_doctor_finds_a_version_that_differs_from_the_lock(synced):
    env_python = synced.env_python("tiny")
    subprocess.run([uv_bin(), "pip", "install", "--python", str(env_python), "idna==3.6"], check=True,
                   capture_output=True)
    res = synced("env", "doctor", "tiny")
    assert res.returncode == 1
    assert "1 package(s) differ from the lock: idna 3.6 (lock: 3.7)" in res.stdout
    assert "idna 3.6 (lock 3.7)" in res.stdout  # the key-package line
    assert "problems found in: tiny" in res.stderr


def test_doctor_finds_a_missing_package_and_a_failing_import(synced):
    subprocess.run([uv_bin(), "pip", "uninstall", "--python", str(synced.env_python("tiny")), "six"], check=True,
                   capture_output=True)
    res = synced("env", "doctor", "tiny")
    assert res.returncode == 1
    assert "1 locked package(s) not installed: six==1.16.0" in res.stdout
    assert "`import six` fails: ModuleNotFoundError" in res.stdout


def test_doctor_missing_env_and_stale_env(cli):
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    res = cli("env", "doctor", "tiny", "--variant", "cpu")
    assert res.returncode == 1
    assert "not synced" in res.stdout and "ichain env sync tiny" in res.stdout
    assert cli("env", "sync", "tiny").returncode == 0
    cli.lock("tiny-cpu.txt", TINY_LOCK + "# a changed lock\n")
    res = cli("env", "doctor", "tiny")
    assert res.returncode == 1 and "lock changed since the last sync" in res.stdout


def test_doctor_unknown_runtime(cli):
    res = cli("env", "doctor", "nope", "--variant", "cpu")
    assert res.returncode == 1 and "no lock is shipped for runtime 'nope' (cpu)" in res.stdout


CHAIN = """\
name: t
device: cpu
stages:
  finetune:
    runtime: {{python: {python}}}
  eval:
    runtime: {{image: /nonexistent/oc.sif}}
"""


def test_chain_python_and_image_runtimes(synced, write_chain):
    cli = synced
    chain = write_chain(CHAIN.format(python=cli.env_python("tiny")))
    cli.lock("xtuner-cpu.txt", "# ichain-import: six\nsix==1.16.0\nidna==3.6\n")
    data = cli.json("env", "doctor", "-c", str(chain))
    kinds = {r["runtime"]: r for r in data["runtimes"]}
    assert set(kinds) == {"xtuner", "opencompass"}
    assert kinds["xtuner"]["kind"] == "python" and kinds["xtuner"]["stages"] == ["finetune"]
    assert not kinds["xtuner"]["ok"]
    assert any("idna 3.7 (lock: 3.6)" in f["message"] for f in kinds["xtuner"]["findings"])
    assert kinds["opencompass"]["kind"] == "image" and kinds["opencompass"]["target"] == "/nonexistent/oc.sif"
    assert any("does not exist" in f["message"] for f in kinds["opencompass"]["findings"])
    assert data["ok"] is False

    cli.lock("xtuner-cpu.txt", "# ichain-import: six\nsix==1.16.0\nidna==3.7\n")
    data = cli.json("env", "doctor", "-c", str(chain), "xtuner")
    assert [r["runtime"] for r in data["runtimes"]] == ["xtuner"] and data["ok"] is True

    res = cli("env", "sync", "-c", str(chain))
    assert res.returncode == 0, res.stderr
    assert "xtuner (cpu): uses python" in res.stderr and "opencompass (cpu): uses image" in res.stderr
    listed = cli.json("env", "list", "-c", str(chain))["runtimes"]
    assert {(r["runtime"], r["kind"]) for r in listed} == {("xtuner", "python"), ("opencompass", "image")}


def test_sync_without_arguments_uses_the_chain(cli, write_chain):
    cli.lock("agent-cpu.txt", "# ichain-import: six\nsix==1.16.0\n")
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    chain = write_chain("name: t\ndevice: cpu\nstages:\n  agent: {}\n")
    res = cli("env", "sync", "-c", str(chain))
    assert res.returncode == 0, res.stderr
    assert (cli.cache / "envs" / "agent").is_dir() and not (cli.cache / "envs" / "tiny").exists()
