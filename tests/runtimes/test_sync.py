"""A real `ichain env sync` (uv, PyPI / the machine's mirrors) of a tiny test-only runtime, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from internlm_chain.runtimes.locks import lock_digest
from internlm_chain.runtimes.state import MARKER
from internlm_chain.runtimes.sync import failing_package

from .conftest import TINY_LOCK


def _record(cli, runtime: str) -> dict:
    return json.loads((cli.cache / "envs" / runtime / MARKER).read_text())


def _leftovers(cli) -> list[str]:
    return [p.name for p in (cli.cache / "envs").iterdir() if ".sync-" in p.name or ".old-" in p.name]


def test_sync_resync_noop_changed_lock_and_broken_lock(cli):
    lock = cli.lock("tiny-cpu.txt", TINY_LOCK)
    res = cli("env", "sync", "tiny", "--variant", "cpu")
    assert res.returncode == 0, res.stderr
    assert "tiny (cpu): synced 2 packages" in res.stderr
    record = _record(cli, "tiny")
    assert record["lock_hash"] == lock_digest(lock)
    assert record["variant"] == "cpu" and record["python"].startswith("3.") and record["uv"][0].isdigit()
    assert cli.installed("tiny", "idna") == "3.7"
    env_inode = (cli.cache / "envs" / "tiny").stat().st_ino

    started = time.monotonic()
    res = cli("env", "sync", "tiny", "--variant", "cpu")
    noop_s = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert "up to date" in res.stderr
    assert noop_s < 5, f"a no-op re-sync took {noop_s:.1f} s"
    assert _record(cli, "tiny")["synced_at"] == record["synced_at"]
    assert (cli.cache / "envs" / "tiny").stat().st_ino == env_inode  # untouched, not rebuilt

    cli.lock("tiny-cpu.txt", TINY_LOCK.replace("idna==3.7", "idna==3.6"))
    listed = cli.json("env", "list")["runtimes"]
    assert [r["synced"] for r in listed if r["runtime"] == "tiny"] == [False]
    res = cli("env", "sync", "tiny", "--variant", "cpu")
    assert res.returncode == 0, res.stderr
    assert "synced" in res.stderr and "up to date" not in res.stderr
    assert cli.installed("tiny", "idna") == "3.6"
    good = _record(cli, "tiny")

    cli.lock("tiny-cpu.txt", TINY_LOCK.replace("six==1.16.0", "six==99.0.1"))
    res = cli("env", "sync", "tiny", "--variant", "cpu")
    assert res.returncode == 1
    assert "could not install six==99.0.1" in res.stderr  # the failing package, named
    assert "last installer lines" in res.stderr and "no version of six==99.0.1" in res.stderr
    assert _leftovers(cli) == []
    assert _record(cli, "tiny") == good  # the previous env is kept as it was ...
    listed = cli.json("env", "list")["runtimes"]
    assert [r["synced"] for r in listed if r["runtime"] == "tiny"] == [False]  # ... and not taken as current

    res = cli("env", "sync", "tiny", "--variant", "cpu", "--force")  # --force rebuilds a current env
    assert res.returncode == 1


def test_broken_lock_for_a_new_runtime_leaves_nothing(cli):
    cli.lock("broken-cpu.txt", "six==1.16.0\nno-such-project-ichain-test==1.0\n")
    res = cli("env", "sync", "broken")
    assert res.returncode == 1
    assert "no-such-project-ichain-test" in res.stderr
    assert not (cli.cache / "envs" / "broken").exists()
    assert _leftovers(cli) == []
    assert (cli.cache / "envs" / ".logs" / "broken.log").read_text().count("no-such-project-ichain-test") >= 1


def test_force_rebuilds(cli):
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    assert cli("env", "sync", "tiny").returncode == 0
    first = _record(cli, "tiny")["synced_at"]
    time.sleep(1.1)
    res = cli("env", "sync", "tiny", "--force")
    assert res.returncode == 0 and "synced 2 packages" in res.stderr
    assert _record(cli, "tiny")["synced_at"] != first


def test_killed_sync_never_looks_synced(cli):
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    proc = cli.popen("env", "sync", "tiny")
    envs = cli.cache / "envs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if envs.is_dir() and any(p.name.startswith(".tiny.sync-") for p in envs.iterdir()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the sync finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # let a killed uv's last writes land
    assert not (envs / "tiny").exists()
    listed = cli.json("env", "list")["runtimes"]
    assert [r["synced"] for r in listed if r["runtime"] == "tiny"] == [False]
    res = cli("env", "sync", "tiny")
    assert res.returncode == 0, res.stderr
    assert _leftovers(cli) == []  # the next sync cleared the killed one's folder


def test_failing_package_is_found_in_uv_messages():
    known = {"torch", "six", "flash-attn"}
    assert failing_package(["error: Failed to download `torch==2.14.1`", "  Caused by: timeout"], known) == "torch"
    assert failing_package(["  × Failed to build `flash-attn==2.7.4`", "  ╰─▶ nvcc not found"], known) == "flash-attn"
    assert failing_package(["  cause: Because six was not found in the package registry and you require "
                            "six==1.0, we can conclude ..."], known) == "six"
    assert failing_package(["error: disk full"], known) is None


def test_missing_lock_is_a_clear_error(cli):
    cli.lock("gpuonly-cuda.txt", "six==1.16.0\n")
    res = cli("env", "sync", "gpuonly", "--variant", "cpu")
    assert res.returncode == 1
    assert "no lock is shipped for runtime 'gpuonly' (cpu)" in res.stderr and "--variant" in res.stderr
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    res = cli("env", "sync", "--variant", "cpu")  # all: runtimes without a lock for this variant are left out
    assert res.returncode == 0, res.stderr
    assert (cli.cache / "envs" / "tiny").is_dir() and not (cli.cache / "envs" / "gpuonly").exists()
    listed = {r["runtime"]: r for r in cli.json("env", "list")["runtimes"]}
    assert listed["gpuonly"]["variant"] == "cuda" and listed["gpuonly"]["synced"] is False
    res = cli("env", "sync", "gpuonly", "--variant", "cpu", "--missing-ok")  # scripts/test.sh's fixed list
    assert res.returncode == 0 and "gpuonly (cpu): skipped" in res.stderr


LOCAL_TORCH = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-cp311-*.whl"))


@pytest.mark.skipif(not LOCAL_TORCH, reason="needs this machine's local torch wheel in /opt/wheels")
def test_local_wheels_configured_for_pip_are_used(cli):
    """pip's find-links here points at /opt/wheels; a `+cpu` torch exists nowhere else."""
    cli.lock("torchonly-cpu.txt", "torch==2.13.0+cpu\n")
    started = time.monotonic()
    res = cli("env", "sync", "torchonly", "--python", "3.11")
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert cli.installed("torchonly", "torch") == "2.13.0+cpu"
    assert took < 60, f"installing torch from the local wheel took {took:.0f} s"
    assert "UV_FIND_LINKS" in _record(cli, "torchonly")["index_settings"]
    # without pip's configuration the same lock cannot be installed: the translation is what made it work
    no_pip = {k: None for k in ("PIP_FIND_LINKS", "UV_FIND_LINKS")} | {"PIP_CONFIG_FILE": os.devnull}
    res = cli("env", "sync", "torchonly", "--python", "3.11", "--force", env=no_pip)
    assert res.returncode == 1 and "could not install torch==2.13.0+cpu" in res.stderr
    assert cli.installed("torchonly", "torch") == "2.13.0+cpu"  # the working env survived the failed rebuild


def test_two_syncs_at_once_take_turns(cli):
    cli.lock("tiny-cpu.txt", TINY_LOCK)
    procs = [cli.popen("env", "sync", "tiny") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = b"".join(err for _, err in outs).decode()
    assert text.count("synced 2 packages") == 1 and text.count("up to date") == 1
    assert subprocess.run([str(cli.env_python("tiny")), "-c", "import six, idna"]).returncode == 0
