"""How a stage's runtime becomes an argv prefix: synced env, interpreter, or container image."""

from __future__ import annotations

from pathlib import Path

from internlm_chain.config.loader import load_chain
from internlm_chain.runtimes.resolve import PACKAGE_DIR, interpreter_argv, lock_hash, wrap_job_env
from internlm_chain.runtimes.state import SYNC_FORMAT, env_state


def _chain(write_chain, runtime_yaml: str):
    return load_chain(write_chain(f"name: t\ndevice: cpu\nstages:\n  finetune:\n    runtime: {runtime_yaml}\n"), [])


def test_synced_env_and_interpreter(write_chain, tmp_path, monkeypatch):
    monkeypatch.setenv("ICHAIN_CACHE", str(tmp_path / "cache"))
    loaded = load_chain(write_chain("name: t\nstages:\n  finetune: {}\n"), [])
    assert interpreter_argv(loaded, "finetune", "xtuner", "cpu") == [str(tmp_path / "cache/envs/xtuner/bin/python")]
    loaded = _chain(write_chain, "{python: /opt/py/bin/python}")
    assert interpreter_argv(loaded, "finetune", "xtuner", "cpu") == ["/opt/py/bin/python"]
    assert lock_hash(loaded, "finetune", "xtuner", "cpu") == "python:/opt/py/bin/python"


def test_apptainer_binds_workdir_and_the_package(write_chain):
    loaded = _chain(write_chain, "{image: /img/xtuner.sif}")
    argv = interpreter_argv(loaded, "finetune", "xtuner", "cuda")
    assert argv == ["apptainer", "exec", "--nv", "--bind", f"{loaded.workdir},{PACKAGE_DIR}:{PACKAGE_DIR}:ro",
                    "/img/xtuner.sif", "python"]
    assert (PACKAGE_DIR / "runtimes" / "resolve.py").is_file()  # worker scripts resolve inside the container
    assert "--nv" not in interpreter_argv(loaded, "finetune", "xtuner", "cpu")


def test_docker_gets_gpus_package_and_job_env(write_chain):
    loaded = _chain(write_chain, "{image: 'org/xtuner:1', engine: docker}")
    wd = str(loaded.workdir)
    argv = interpreter_argv(loaded, "finetune", "xtuner", "cuda")
    assert argv == ["docker", "run", "--rm", "--network", "host", "--ipc", "host", "--gpus", "all",
                    "-v", f"{wd}:{wd}", "-v", f"{PACKAGE_DIR}:{PACKAGE_DIR}:ro", "-w", wd, "org/xtuner:1", "python"]
    assert "--gpus" not in interpreter_argv(loaded, "finetune", "xtuner", "cpu")
    wrapped = wrap_job_env([*argv, "train.py"], {"B": "2", "A": "1"}, cwd=f"{wd}/finetune")
    assert wrapped[:6] == ["docker", "run", "-e", "A", "-e", "B"]
    assert wrapped[wrapped.index("-w") + 1] == f"{wd}/finetune" and wrapped[-1] == "train.py"
    assert wrap_job_env(["/env/bin/python", "x.py"], {"A": "1"}, "/w") == ["/env/bin/python", "x.py"]


def test_runner_hash_and_sync_record_agree(write_chain, tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "xtuner-cpu.txt").write_text("six==1.16.0\n")
    monkeypatch.setenv("ICHAIN_LOCKS_DIR", str(locks))
    monkeypatch.setenv("ICHAIN_CACHE", str(tmp_path / "cache"))
    loaded = load_chain(write_chain("name: t\ndevice: cpu\nstages:\n  finetune: {}\n"), [])
    digest = lock_hash(loaded, "finetune", "xtuner", "cpu")
    env = tmp_path / "cache" / "envs" / "xtuner"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(Path("/bin/sh"))
    (env / ".ichain-runtime.json").write_text(f'{{"lock_hash": "{digest}", "variant": "cpu", "format": {SYNC_FORMAT}}}')
    assert env_state("xtuner", "cpu", tmp_path / "cache").synced


def test_an_env_from_an_older_sync_format_is_resynced(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "data-cpu.txt").write_text("six==1.16.0\n")
    monkeypatch.setenv("ICHAIN_LOCKS_DIR", str(locks))
    env = tmp_path / "cache" / "envs" / "data"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(Path("/bin/sh"))
    from internlm_chain.runtimes.locks import lock_digest

    digest = lock_digest(locks / "data-cpu.txt")
    (env / ".ichain-runtime.json").write_text(f'{{"lock_hash": "{digest}", "variant": "cpu"}}')
    state = env_state("data", "cpu", tmp_path / "cache")
    assert not state.synced and "older" in state.reason


def test_a_docker_runtime_gets_the_jobs_env_and_cwd(write_chain, tmp_path):
    import json
    import subprocess
    import sys

    chain = write_chain(f"name: t\ndevice: cpu\nworkdir: {tmp_path / 'w'}\nstages:\n  data:\n    demo_corpus: 10\n"
                        "    runtime: {image: 'reg/data:1', engine: docker}\n")
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "run", str(chain), "--dry-run", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)[0]["jobs"][0]
    argv = job["argv"]
    assert argv[:2] == ["docker", "run"] and "reg/data:1" in argv
    env_keys = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert set(job["env"]) <= set(env_keys)
    assert argv[argv.index("-w") + 1] == job["cwd"]
