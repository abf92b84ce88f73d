"""Every bad deploy input is one clear error before anything starts (exit 2, no traceback)."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.deploy.chains import chain_text


def ichain(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "internlm_chain", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_turbomind_without_gpu_is_an_error(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run", deploy="backend: turbomind"))
    res = ichain("deploy", "serve", "-c", str(chain))
    assert res.returncode == 2, res.stderr
    assert "stages.deploy.backend" in res.stderr and "needs an NVIDIA GPU" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / ".services").exists()


def test_not_a_model_is_an_error(write_chain, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    chain = write_chain(chain_text(empty, tmp_path / "run"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2
    assert "model.path" in res.stderr and "not a model directory (no config.json)" in res.stderr
    res = ichain("deploy", "serve", "-c", str(chain), "--model", str(tmp_path / "nope"), "--dry-run")
    assert res.returncode == 2 and "model directory not found" in res.stderr


def test_flags_form_errors_name_the_flag_not_a_scratch_file(tmp_path):
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "deploy", "serve", "--model", "nope", "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: --model: model.path: model directory not found: {tmp_path / 'nope'}"), \
        res.stderr
    assert "chain.yaml" not in res.stderr and "Traceback" not in res.stderr


def test_port_in_use_is_an_error(write_chain, fake_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        chain = write_chain(chain_text(fake_model, tmp_path / "run", deploy=f"port: {port}"))
        res = ichain("deploy", "serve", "-c", str(chain))
    assert res.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in res.stderr and "stages.deploy.port" in res.stderr


def test_awq_without_local_calibration_data(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda",
                                   deploy="quantize: {enabled: true, method: awq}"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.quantize.calib_data" in res.stderr
    assert "must not download" in res.stderr
    (tmp_path / "hf").mkdir()
    res = ichain("deploy", "quantize", "-c", str(chain), "--calib-data", str(tmp_path / "hf"), "--dry-run")
    assert res.returncode == 2 and "holds no pileval calibration data" in res.stderr


def test_quantize_on_cpu_is_an_error(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run"))
    res = ichain("deploy", "quantize", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "needs a GPU" in res.stderr


def test_api_key_is_never_printed(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda", deploy="api_key_env: T_KEY"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run", "--show-files", env={"T_KEY": "sekrit-123"})
    assert res.returncode == 0, res.stderr
    assert "deploy_keyed.py --key-env T_KEY -- serve api_server" in res.stdout
    assert "--api-keys" not in res.stdout and "sekrit-123" not in res.stdout + res.stderr
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run", env={"T_KEY": ""})
    assert res.returncode == 2 and "environment variable T_KEY is not set" in res.stderr


def test_api_key_env_must_be_a_name(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run", deploy="api_key_env: 'sk-abc def'"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.api_key_env" in res.stderr and "NAME of an environment" in res.stderr


def test_needs_finetune_output(write_chain, fake_model, tmp_path):
    text = chain_text(fake_model, tmp_path / "run").replace("stages:\n", "stages:\n  finetune: {}\n")
    chain = write_chain(text)
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "finetune" in res.stderr, res.stderr


def test_stop_and_status_without_a_deployment(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run"))
    for _ in range(2):
        res = ichain("deploy", "stop", "-c", str(chain))
        assert res.returncode == 0 and "nothing running" in res.stdout
    res = ichain("deploy", "status", "-c", str(chain))
    assert res.returncode == 1 and "no deployment recorded" in res.stdout


def _adapter(tmp_path):
    import json

    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}), encoding="utf-8")
    return d


def test_adapter_on_the_cpu_standin_is_an_error(write_chain, fake_model, tmp_path):
    chain = write_chain(chain_text(fake_model, tmp_path / "run", deploy=f"adapter: {_adapter(tmp_path)}"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.adapter" in res.stderr
    assert "serves whole models only" in res.stderr and "Traceback" not in res.stderr


def test_adapter_needs_the_pytorch_engine_and_a_peft_folder(write_chain, fake_model, tmp_path):
    adapter = _adapter(tmp_path)
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda",
                                   deploy=f"adapter: {adapter}\nbackend: turbomind"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.backend" in res.stderr and "does not apply adapters" in res.stderr
    (adapter / "adapter_config.json").unlink()
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda", deploy=f"adapter: {adapter}"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.adapter" in res.stderr and "not a PEFT adapter" in res.stderr
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda",
                                   deploy=f"adapter: {adapter}\nquantize: {{enabled: true}}"))
    res = ichain("deploy", "serve", "-c", str(chain), "--dry-run")
    assert res.returncode == 2 and "quantize needs a whole model" in res.stderr


def _finetune_merge_false_chain(write_chain, tmp_path, device: str):

    from finetune.finetune_helpers import fake_7b, sft_rows, write_jsonl

    model = fake_7b(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(4))
    return write_chain(f"""name: t
workdir: {tmp_path / 'run'}
device: {device}
model: {{path: {model}, chat_template: internlm2_chat}}
stages:
  finetune:
    data: {data}
    method: lora
    merge: false
  deploy: {{}}
""")


def test_finetune_adapter_is_served_with_lmdeploy_adapters(write_chain, tmp_path):
    """A whole-chain dry-run on a GPU host: deploy serves finetune's base model + its adapter."""
    import json

    chain = _finetune_merge_false_chain(write_chain, tmp_path, "cuda")
    res = ichain("run", str(chain), "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    deploy = next(o for o in json.loads(res.stdout) if o["stage"] == "deploy")
    spec = json.loads(next(iter(deploy["jobs"][0]["files"].values())))
    argv = spec["services"][0]["argv"]
    adapter = str(tmp_path / "run" / "finetune" / "adapter")
    assert argv[argv.index("api_server") + 1] == str(tmp_path / "models" / "internlm2-chat-7b")
    assert argv[argv.index("--adapters") + 1] == f"t={adapter}"
    assert argv[argv.index("--backend") + 1] == "pytorch" and argv[argv.index("--model-name") + 1] == "t-base"
    assert spec["served_name"] == "t"  # clients (eval, agent) reach the adapter


def test_finetune_adapter_on_cpu_names_the_merge_field(write_chain, tmp_path):
    chain = _finetune_merge_false_chain(write_chain, tmp_path, "cpu")
    res = ichain("run", str(chain), "--dry-run")
    assert res.returncode == 2
    assert "chain.yaml:" in res.stderr and "stages.finetune.merge" in res.stderr
    assert "merge: true" in res.stderr and "Traceback" not in res.stderr


def test_adapter_flag_serves_the_adapter_with_lmdeploy(write_chain, fake_model, tmp_path):
    """`--adapter DIR` is `stages.deploy.adapter`: on a GPU host the dry-run shows LMDeploy's pytorch engine
    with `--adapters NAME=DIR` (a relative DIR is taken from the current directory)."""
    import json

    adapter = _adapter(tmp_path)
    chain = write_chain(chain_text(fake_model, tmp_path / "run", device="cuda"))
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "deploy", "serve", "-c", str(chain), "--adapter",
                          "adapter", "--dry-run", "--json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (outcome,) = json.loads(res.stdout)
    spec = json.loads(next(iter(outcome["jobs"][0]["files"].values())))
    argv = spec["services"][0]["argv"]
    assert argv[argv.index("--adapters") + 1] == f"t={adapter}"
    assert argv[argv.index("--backend") + 1] == "pytorch" and argv[argv.index("--model-name") + 1] == "t-base"
    assert argv[argv.index("api_server") + 1] == str(fake_model) and spec["served_name"] == "t"
    res = ichain("deploy", "serve", "-c", str(chain), "--adapter", str(tmp_path / "nope"), "--dry-run")
    assert res.returncode == 2 and "stages.deploy.adapter" in res.stderr and "not a PEFT adapter" in res.stderr


def test_adapter_flag_on_the_cpu_standin_is_an_error(fake_model, tmp_path):
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "deploy", "serve", "--model", str(fake_model),
                          "--adapter", str(_adapter(tmp_path)), "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "stages.deploy.adapter" in res.stderr and "serves whole models only" in res.stderr
    assert "merge it into the model" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "ichain-deploy" / ".services").exists()
