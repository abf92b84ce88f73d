"""`env sync --host-torch` and `env wheels`: a real offline sync on a host interpreter that has torch.

The "host" is a venv holding this machine's local CPU torch wheel (the GPU host's interpreter is a venv
too: /opt/torch/.venv/bin/python3). Wheels are collected with `ichain env wheels` from the local indexes,
then the runtime is synced with uv offline, from that folder only, with an empty uv cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from internlm_chain.runtimes import bundles, hosttorch, pipconf
from internlm_chain.runtimes.hosttorch import paired_version, plan, record_reason
from internlm_chain.runtimes.locks import parse_lock
from internlm_chain.runtimes.state import MARKER
from internlm_chain.runtimes.sync import mode_mismatch, uv_bin
from internlm_chain.runtimes.wheels import expand_platforms

LOCAL_TORCH = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-cp311-*.whl"))

# torch 2.5.1 and its CUDA library: the host's torch replaces both. mpmath 1.4.1 also exists on the host
# (1.3.0, pulled in by torch → sympy): the runtime's own pin must win.
SMALL_LOCK = """\
# A test-only runtime for host-torch syncs.
# ichain-import: six idna
six==1.17.0
idna==3.20
mpmath==1.4.1
torch==2.5.1
nvidia-nccl-cu12==2.21.5
"""


# ---- pure logic ------------------------------------------------------------------------------------
def test_paired_releases_follow_torch():
    assert paired_version("torchvision", "2.5.1") == "0.20.1"
    assert paired_version("torchvision", "2.11.0+cu130") == "0.26.0"
    assert paired_version("torchvision", "2.12.1") == "0.27.1"  # the lmdeploy lock's own pair
    assert paired_version("torchvision", "2.14.1") == "0.29.1"  # the xtuner CPU facts' pair
    assert paired_version("torchaudio", "2.11.0+cu130") == "2.11.0"
    assert paired_version("torchvision", "1.13.1") is None


def _lock(tmp_path, text: str):
    path = tmp_path / "x-cuda.txt"
    path.write_text(text)
    return parse_lock(path, "x", "cuda")


def test_plan_takes_the_torch_family_from_the_host(tmp_path):
    lock = _lock(tmp_path, "six==1.17.0\ntorch==2.12.1\ntorchvision==0.27.1\ntriton==3.7.1\ncuda-toolkit==13.0.2\n"
                           "nvidia-cublas-cu12==12.9.3.13\nnvidia-cudnn-cu13==9.20.0.48\nnumpy==2.4.6\n")
    host = {"torch": "2.11.0+cu130", "triton": "3.6.0", "numpy": "2.5.0"}
    p = plan(lock, host, "2.11.0+cu130")
    assert p.requirements == ["six==1.17.0", "torchvision==0.26.0", "numpy==2.4.6"]  # the lock's numpy, not the host's
    assert set(p.from_host) == {"torch", "torchvision", "triton", "cuda-toolkit", "nvidia-cublas-cu12",
                                "nvidia-cudnn-cu13"}
    assert p.paired == {"torchvision": "0.26.0"} and p.problems == []
    p = plan(lock, {**host, "torchvision": "0.26.0"}, "2.11.0+cu130")  # the host's own torchvision is used
    assert "torchvision==0.26.0" not in p.requirements and p.paired == {}
    p = plan(lock, {"torch": "2.13.0+cpu"}, "2.13.0+cpu")  # a CPU torch has no triton
    assert len(p.problems) == 1 and "triton (==3.7.1)" in p.problems[0] and "host has none" in p.problems[0]


def test_bitsandbytes_that_cannot_import_beside_a_new_triton_is_replaced(tmp_path):
    lock = _lock(tmp_path, "bitsandbytes==0.45.0\npeft==0.14.0\ntriton==3.1.0\n")
    p = plan(lock, {"torch": "2.11.0+cu130", "triton": "3.6.0"}, "2.11.0+cu130")
    assert p.requirements == ["bitsandbytes==0.45.1", "peft==0.14.0"] and p.replaced == {"bitsandbytes": "0.45.1"}
    p = plan(lock, {"torch": "2.5.1", "triton": "3.1.0"}, "2.5.1")  # triton.ops still there: the lock's pin
    assert p.requirements == ["bitsandbytes==0.45.0", "peft==0.14.0"] and p.replaced == {}


def test_host_record_goes_stale_when_the_host_torch_changes(tmp_path):
    site = tmp_path / "site"
    (site / "torch-2.11.0+cu130.dist-info").mkdir(parents=True)
    python = tmp_path / "python"
    python.write_text("")
    record = {"mode": "host-torch", "host": {"python": str(python), "site": [str(site)], "torch": "2.11.0+cu130"}}
    assert record_reason(record) == ""
    (site / "torch-2.11.0+cu130.dist-info").rename(site / "torch-2.12.0.dist-info")
    assert record_reason(record) == "the host's torch changed (2.11.0+cu130 → 2.12.0)"
    python.unlink()
    assert "is gone" in record_reason(record)
    host = hosttorch.Host(str(python), "3.12.3", [str(site)], {}, "2.11.0+cu130")
    assert mode_mismatch({"mode": "lock"}, host) and mode_mismatch(record, None)
    assert mode_mismatch(record, host) == ""
    assert "torch changed" in mode_mismatch(record, hosttorch.Host(str(python), "3.12.3", [], {}, "2.12.0"))


def test_manylinux_platform_takes_older_tags():
    tags = expand_platforms(("manylinux_2_28_x86_64",))
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags


# ---- real syncs ----------------------------------------------------------------------------------
def _uv_env() -> dict[str, str]:
    return {**os.environ, **pipconf.uv_env_from_pip().env}


@pytest.fixture(scope="session")
def host_python(tmp_path_factory) -> Path:
    """A venv with torch 2.13.0+cpu (from /opt/wheels): what a GPU image's interpreter looks like."""
    if not LOCAL_TORCH:
        pytest.skip("needs this machine's local torch wheel in /opt/wheels")
    root = tmp_path_factory.mktemp("host")
    uv, env = uv_bin(), _uv_env()
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(root / "venv")], check=True, env=env)
    python = root / "venv" / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), "torch==2.13.0+cpu"], check=True, env=env,
                   timeout=600)
    return python


def _offline(wheels: Path, uv_cache: Path) -> dict[str, str | None]:
    """No index, no network, an empty uv cache: only the wheel folder (what gpu_smoke --wheels sets)."""
    return {"UV_NO_INDEX": "1", "UV_OFFLINE": "1", "UV_FIND_LINKS": str(wheels), "UV_CACHE_DIR": str(uv_cache),
            "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": None, "UV_EXTRA_INDEX_URL": None,
            "UV_INDEX_URL": None, "UV_INDEX_STRATEGY": None}


def _run_in(python: Path, code: str) -> dict:
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.upstream
def test_offline_host_torch_sync_from_collected_wheels(cli, host_python, tmp_path):
    cli.lock("small-cpu.txt", SMALL_LOCK)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "stale-0.1-py3-none-any.whl").write_bytes(b"from an earlier collection")
    res = cli("env", "wheels", "small", "--variant", "cpu", "-d", str(wheels), "--host-torch",
              "--python-version", "3.11", "--no-ichain", "--split-mib", "2", "--json", timeout=600)
    assert res.returncode == 0, res.stderr
    collected = json.loads(res.stdout)
    names = sorted(p.name for p in wheels.glob("*.whl") if not p.name.startswith("stale"))
    assert [n.split("-")[0] for n in names] == ["idna", "mpmath", "six"], names  # no torch, no CUDA library
    assert sorted(collected["runtimes"][0]["files"]) == names
    assert collected["total_bytes"] == sum((wheels / n).stat().st_size for n in names)
    # what a host receives: the bundles, joined there (the stale wheel is not part of them)
    assert len(collected["bundles"]) == 1
    joined = tmp_path / "joined"
    assert sorted(bundles.join(wheels / "bundles", joined)) == sorted([*names, "wheels.json"])

    offline = _offline(joined, tmp_path / "uv-cache")
    res = cli("env", "sync", "small", "--variant", "cpu", "--host-torch", "--python", str(host_python), env=offline)
    assert res.returncode == 0, res.stderr
    assert "2 torch/CUDA pins come from the host (torch 2.13.0+cpu)" in res.stderr
    runtime = cli.env_python("small")
    host_site = str(host_python.parent.parent / "lib")
    seen = _run_in(runtime, "import json, torch, mpmath, six, idna; print(json.dumps({'torch': torch.__file__, "
                            "'tv': torch.__version__, 'mpmath': [mpmath.__version__, mpmath.__file__], "
                            "'six': six.__version__, 'idna': idna.__version__}))")
    assert seen["torch"].startswith(host_site) and seen["tv"] == "2.13.0+cpu"
    assert seen["mpmath"][0] == "1.4.1" and seen["mpmath"][1].startswith(str(cli.cache))  # the lock's pin wins
    assert (seen["six"], seen["idna"]) == ("1.17.0", "3.20")
    host_mpmath = _run_in(host_python, "import json, mpmath; print(json.dumps(mpmath.__version__))")
    assert host_mpmath != "1.4.1"  # so the check above really is about shadowing
    record = json.loads((cli.cache / "envs" / "small" / MARKER).read_text())
    assert record["mode"] == "host-torch" and record["host"]["torch"] == "2.13.0+cpu"
    assert set(record["host"]["from_host"]) == {"torch", "nvidia-nccl-cu12"}

    started = time.monotonic()
    res = cli("env", "sync", "small", "--variant", "cpu", "--host-torch", "--python", str(host_python), env=offline)
    took = time.monotonic() - started
    assert res.returncode == 0 and "up to date" in res.stderr, res.stderr
    assert took < 5, f"a no-op host-torch sync took {took:.1f} s"

    listed = {r["runtime"]: r for r in cli.json("env", "list")["runtimes"]}
    assert listed["small"]["synced"] is True and listed["small"]["mode"] == "host-torch"
    assert listed["small"]["host_torch"] == "2.13.0+cpu"
    res = cli("env", "doctor", "small", "--variant", "cpu")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "built on the host's torch 2.13.0+cpu" in res.stdout
    assert "all 3 locked packages at their pinned versions (2 torch/CUDA pins taken from the host instead)" in res.stdout
    assert "`import torch` works: 2.13.0+cpu from the host" in res.stdout


def test_host_without_torch_is_a_clear_error(cli, tmp_path):
    cli.lock("small-cpu.txt", SMALL_LOCK)
    subprocess.run([uv_bin(), "venv", "-q", "--python", "3.11", str(tmp_path / "bare")], check=True, env=_uv_env())
    bare = tmp_path / "bare" / "bin" / "python"
    res = cli("env", "sync", "small", "--host-torch", "--python", str(bare))
    assert res.returncode == 2, res.stderr
    assert f"{bare} has no torch" in res.stderr and "Traceback" not in res.stderr
    res = cli("env", "sync", "small", "--host-torch")
    assert res.returncode == 2 and "--host-torch needs --python PY" in res.stderr
    assert not (cli.cache / "envs" / "small").exists()


@pytest.mark.upstream
def test_lock_needing_what_the_host_lacks_fails_before_building(cli, host_python):
    cli.lock("small-cpu.txt", SMALL_LOCK + "triton==3.1.0\n")
    res = cli("env", "sync", "small", "--host-torch", "--python", str(host_python))
    assert res.returncode == 2, res.stderr
    assert "small (cpu): the lock needs triton (==3.1.0)" in res.stderr and "Traceback" not in res.stderr
    assert not (cli.cache / "envs").exists() or not (cli.cache / "envs" / "small").exists()
