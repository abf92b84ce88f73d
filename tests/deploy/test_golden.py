"""Golden tests: the exact LMDeploy command lines and environment the deploy stage renders (GPU paths).

The multi-node case pins what this stage renders (one distributed job, a supervisor per node that runs
the proxy on the first node); the sbatch/srun wrapping is the slurm launcher's and is tested there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.deploy.chains import chain_text

from internlm_chain.chain.planner import Planner
from internlm_chain.config.loader import load_chain
from internlm_chain.stages.registry import get_stage

CASES = {
    "7b_turbomind_tp1": "backend: turbomind\nserved_name: internlm2-chat-7b\nsession_len: 8192",
    "20b_tp2_kv_int8": ("backend: turbomind\ntp: 2\nquant_policy: 8\ncache_max_entry_count: 0.5\n"
                        "max_batch_size: 64\nserved_name: internlm2-chat-20b\nport: 24000\napi_key_env: ICHAIN_T_KEY"),
    "awq_model": "served_name: internlm2-chat-7b-4bit",
    "proxy_two_nodes_slurm": ("backend: turbomind\ntp: 4\nserved_name: internlm2-chat-20b\nhost: 0.0.0.0\n"
                              "proxy: {enabled: true, nodes: 2, port: 8000}\n"
                              "launcher: {kind: slurm, nnodes: 2, slurm: {partition: gpu, wait: false}}"),
    "awq_quantize_then_serve": ("served_name: internlm2-chat-7b-4bit\n"
                                "quantize: {enabled: true, method: awq, calib_data: CALIB}"),
    # the same after a server death: the verified quantised model is reused, only the server starts
    "awq_restart_reuses_quantized": ("served_name: internlm2-chat-7b-4bit\n"
                                     "quantize: {enabled: true, method: awq, calib_data: CALIB}"),
    "lora_adapter_pytorch": "served_name: internlm2-chat-7b-sft\nadapter: ADAPTER\napi_key_env: ICHAIN_T_KEY",
    "lora_adapter_proxy": ("served_name: internlm2-chat-7b-sft\nadapter: ADAPTER\ntp: 2\n"
                           "proxy: {enabled: true, servers_per_node: 2, port: 8000}"),
}


def render(case: str, tmp_path: Path) -> str:
    model = tmp_path / "models" / "internlm2-chat"
    model.mkdir(parents=True)
    cfg = {"model_type": "internlm2"}
    if case == "awq_model":
        cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128}
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    calib = tmp_path / "hf" / "hub" / "datasets--mit-han-lab--pile-val-backup"
    calib.mkdir(parents=True)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}), encoding="utf-8")
    deploy = CASES[case].replace("CALIB", str(tmp_path / "hf")).replace("ADAPTER", str(adapter))
    extra = "runtimes:\n  cache_dir: /opt/ichain-cache\n"
    chain = tmp_path / "chain.yaml"
    chain.write_text(chain_text(model, tmp_path / "run", device="cuda", deploy=deploy, extra=extra), encoding="utf-8")
    loaded = load_chain(chain)
    planner = Planner(loaded)
    ctx = planner.context("deploy")
    stage = get_stage("deploy")
    assert stage.validate(ctx) == []
    key = stage.quantize_key(ctx) if ctx.settings.quantize.enabled else "no-key"
    if case == "awq_restart_reuses_quantized":
        complete_quantization(stage.quantized_dir(ctx), key)
    lines = []
    for job in stage.plan(ctx):
        spec_files = {p: t for p, t in job.files.items() if p.endswith("serve.json")}
        lines += [f"# job {job.name} (runtime {job.runtime}; nodes {job.resources.nodes}, "
                  f"gpus/node {job.resources.gpus_per_node}; distributed {job.distributed})",
                  f"# {job.description}", job.command_line()]
        for text in spec_files.values():
            spec = json.loads(text)
            lines.append(f"# supervisor: mode={spec['mode']} endpoint={spec['endpoint']} "
                         f"served_name={spec['served_name']} expect_servers={spec['expect_servers']} "
                         f"secret_env={spec['secret_env']}")
            for svc in spec["services"]:
                env = " ".join(f"{k}={v}" for k, v in sorted(svc["env"].items()))
                lines.append(f"# service {svc['name']}{' (first node only)' if svc['node0_only'] else ''}"
                             f" url={svc['url']} log={svc['log']}" + (f" env: {env}" if env else ""))
                lines.append(svc["display"])
    arts = stage.predict_outputs(ctx, tmp_path / "run" / "deploy")
    for name, art in sorted(arts.items()):
        lines.append(f"# output {name}: {art.kind} {art.path}"
                     + (f" served_name={art.served_name}" if hasattr(art, "served_name") else ""))
    from internlm_chain.stages.deploy.stage import WORKERS

    # the key hashes file mtimes (and the lock): stable within a run, not across machines
    return "\n".join(lines).replace(str(tmp_path), "TMP").replace(str(WORKERS), "WORKERS").replace(key, "KEY") + "\n"


def complete_quantization(out: Path, key: str) -> None:
    """What the quantise-once worker leaves after a finished run (the worker itself writes it here, with a
    stand-in for `lmdeploy lite`, which needs a GPU)."""
    import subprocess
    import sys

    from internlm_chain.workers import deploy_quantize

    fake_lite = ("import pathlib,sys; w=pathlib.Path(sys.argv[1]); (w/'config.json').write_text('{}'); "
                 "(w/'model.safetensors').write_bytes(b'0'*64)")
    res = subprocess.run([sys.executable, deploy_quantize.__file__, "--out", str(out), "--key", key, "--",
                          "-c", fake_lite, "@WORK@"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert deploy_quantize.is_complete(str(out), key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lmdeploy_command_lines(case, tmp_path, golden, monkeypatch):
    monkeypatch.setenv("ICHAIN_T_KEY", "not-in-the-output")
    text = render(case, tmp_path)
    assert "not-in-the-output" not in text
    golden.check(f"deploy/{case}.txt", text)
