"""Validation in the ichain process (no runtime): InternEvo's rules for world sizes 1 and 8, the model
shape, vocabulary vs tokenizer, data layout, launcher and CPU smoke-mode bounds. Each bad setting is one
located problem naming our field and the upstream rule behind it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.pretrain.helpers import chain_text, fake_internevo_data, fake_tokenizer

from internlm_chain.config.loader import load_chain
from internlm_chain.stages.registry import get_stage
from internlm_chain.workers import pretrain_rules

TORCHRUN8 = "launcher: {kind: torchrun, nproc_per_node: 8, master_port: 29500}\n"


def problems(write_chain, tmp_path, pretrain: str, device="cuda", launcher=TORCHRUN8, extra="", data=None,
             data_opts=""):
    from internlm_chain.chain.planner import Planner

    fake_internevo_data(tmp_path / "data")
    fake_tokenizer(tmp_path / "tok", 92544)
    body = f"data: {{path: {data or tmp_path / 'data'}, seq_len: 2048{data_opts}}}\ntokenizer: {tmp_path}/tok\n" + pretrain
    path = write_chain(chain_text(tmp_path, body, device=device, launcher=launcher, extra=extra))
    loaded = load_chain(path)
    return get_stage("pretrain").validate(Planner(loaded).context("pretrain"))


def by_path(found):
    return {p.path: p for p in found}


@pytest.mark.parametrize("launcher,parallel", [
    ("", "parallel: {zero1: -1}"),  # world 1
    (TORCHRUN8, "parallel: {zero1: 8}"),
    (TORCHRUN8, "parallel: {zero1: 4, tensor: {size: 2, mode: fsp}}"),
    (TORCHRUN8, "parallel: {zero1: 2, tensor: {size: 2}, pipeline: {size: 2}}"),
    (TORCHRUN8, "parallel: {zero1: -1, tensor: {size: 2, mode: isp}, weight: {size: 4}}\nuse_flash_attn: true"),
    (TORCHRUN8, "parallel: {tensor: {size: 2, mode: msp}}|, micro_bsz: 1"),
    (TORCHRUN8, "parallel: {pipeline: {size: 2, num_chunks: 2, interleaved_overlap: true}}|, micro_num: 4"),
])
def test_good_parallel_settings(write_chain, tmp_path, launcher, parallel):
    parallel, _, data_opts = parallel.partition("|")
    assert problems(write_chain, tmp_path, f"model: {{preset: internlm2-7b}}\n{parallel}", launcher=launcher,
                    data_opts=data_opts) == []


def test_tensor_size_3_on_8_gpus(write_chain, tmp_path):
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nparallel: {tensor: {size: 3}}"))
    p = found["stages.pretrain.parallel.tensor.size"]
    assert "8 GPUs cannot be split" in p.message and "(world size 8)" in p.message
    assert p.hint.startswith("InternEvo rule — ParallelContext.check_sanity") and p.line == 10
    # the 7B heads (32, KV 8) do not split over 3 ranks either: one problem per field
    assert "stages.pretrain.model.num_kv_attention_heads" in found


def test_zero1_must_divide_data_parallel(write_chain, tmp_path):
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nparallel: {zero1: 3}"))
    p = found["stages.pretrain.parallel.zero1"]
    assert "ZeRO-1 size 3 does not divide the data-parallel size 8" in p.message
    assert "data-parallel size % zero1 size == 0" in p.hint
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nparallel: {zero1: 16}"))
    assert "larger than the data-parallel size 8" in found["stages.pretrain.parallel.zero1"].message


def test_flash_attention_vs_packing(write_chain, tmp_path):
    assert problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nuse_flash_attn: true") == []
    path = write_chain(chain_text(tmp_path, f"model: {{preset: internlm2-7b}}\nuse_flash_attn: true\n"
                                            f"data: {{path: {tmp_path}/data, packed: false}}\ntokenizer: {tmp_path}/tok",
                                  launcher=TORCHRUN8))
    from internlm_chain.chain.planner import Planner

    found = get_stage("pretrain").validate(Planner(load_chain(path)).context("pretrain"))
    assert len(found) == 1 and found[0].path == "stages.pretrain.data.packed"
    assert "use_flash_attn is True but use_packed_dataset is False" in found[0].message
    assert "use_packed_dataset should be set same value as use_flash_attn" in found[0].hint


def test_weight_parallel_needs_isp(write_chain, tmp_path):
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nparallel: {weight: {size: 2}}"))
    assert "weight parallel is only supported with isp" in found["stages.pretrain.parallel.weight.size"].hint


def test_pipeline_deeper_than_the_model(write_chain, tmp_path):
    found = by_path(problems(write_chain, tmp_path, "model: {preset: tiny, vocab_size: 92544}\n"
                                                    "parallel: {pipeline: {size: 4}}", launcher=TORCHRUN8))
    assert "2 layers cannot fill 4 pipeline stages" in found["stages.pretrain.model.num_layers"].message


def test_vocab_must_cover_the_tokenizer(write_chain, tmp_path):
    found = problems(write_chain, tmp_path, "model: {preset: internlm2-7b, vocab_size: 1000}")
    assert len(found) == 1 and found[0].path == "stages.pretrain.model.vocab_size"
    assert "has 92544 tokens but vocab_size is 1000" in found[0].message


def test_incomplete_shape_and_unknown_vocab(write_chain, tmp_path):
    found = problems(write_chain, tmp_path, "model: {preset: null, hidden_size: 64, num_layers: 2}")
    assert len(found) == 1 and "num_attention_heads, mlp_ratio missing" in found[0].message
    assert pretrain_rules.tokenizer_size({"model": {"vocab": {"a": 0, "b": 1}},
                                          "added_tokens": [{"id": 7, "content": "x"}]}) == 8


def test_world_needs_a_distributed_launcher(write_chain, tmp_path):
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\ngpus_per_node: 8", launcher=""))
    assert "8 processes need a distributed launcher" in found["stages.pretrain.launcher.kind"].message
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\nnodes: 4"))
    assert "the launcher starts 1 (nnodes)" in found["stages.pretrain.nodes"].message


def test_cpu_smoke_mode_bounds(write_chain, tmp_path):
    found = problems(write_chain, tmp_path, "model: {preset: internlm2-7b}", device="cpu", launcher="")
    assert len(found) == 1 and "CPU smoke mode refuses a 7.7" in found[0].message
    found = by_path(problems(write_chain, tmp_path, "model: {preset: tiny, vocab_size: 92544}\nuse_flash_attn: true\n"
                                                    "dtype: bfloat16", device="cpu", launcher=""))
    assert "flash attention needs CUDA" in found["stages.pretrain.use_flash_attn"].message
    assert "float32" in found["stages.pretrain.dtype"].message


def test_data_layout(write_chain, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.bin").write_text("{}\n")
    found = problems(write_chain, tmp_path, "model: {preset: internlm2-7b}", data=tmp_path / "flat")
    assert len(found) == 1 and "holds .bin files directly" in found[0].message and "<root>/<type>/*.bin" in found[0].hint
    found = problems(write_chain, tmp_path, "model: {preset: internlm2-7b}", data=tmp_path / "none")
    assert "not found" in found[0].message


def test_config_validate_cli_catches_rules_without_the_runtime(write_chain, tmp_path):
    fake_internevo_data(tmp_path / "data")
    fake_tokenizer(tmp_path / "tok", 92544)
    path = write_chain(chain_text(tmp_path, f"model: {{preset: internlm2-7b}}\ndata: {{path: {tmp_path}/data}}\n"
                                            f"tokenizer: {tmp_path}/tok\nparallel: {{tensor: {{size: 3}}}}",
                                  launcher=TORCHRUN8))
    env = {"ICHAIN_CACHE": str(tmp_path / "no-runtimes"), "PATH": "/usr/bin:/bin"}
    for argv in (["config", "validate", str(path)], ["pretrain", "-c", str(path), "--validate"]):
        res = subprocess.run([sys.executable, "-m", "internlm_chain", *argv], capture_output=True, text=True, env=env)
        assert res.returncode == 2, res.stderr
        assert "stages.pretrain.parallel.tensor.size" in res.stderr and "InternEvo rule" in res.stderr
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("pretrain,field,says", [
    # InternEvo 0.5.2 runs these but trains a wrong model (measured on CPU, see docs/pretrain.md)
    ("parallel: {tensor: {size: 1, mode: isp}, weight: {size: 2}}\nuse_flash_attn: true", "parallel.tensor.size",
     "layer-norm weights are trained separately on each weight-parallel rank"),
    ("parallel: {tensor: {size: 2, mode: isp}, weight: {size: 2}}", "parallel.tensor.mode",
     "needs packed data (use_flash_attn)"),
    ("parallel: {tensor: {size: 2, mode: fsp}}|, micro_bsz: 2", "data.micro_bsz",
     "needs micro_bsz 1 (it is 2)"),
    ("parallel: {pipeline: {size: 2, num_chunks: 2}}", "parallel.pipeline.interleaved_overlap",
     "num_chunks > 1 needs interleaved_overlap"),
    ("parallel: {pipeline: {size: 1, num_chunks: 2, interleaved_overlap: true}}", "parallel.pipeline.num_chunks",
     "needs a pipeline"),
    ("parallel: {pipeline: {size: 4, num_chunks: 3, interleaved_overlap: true}}|, micro_num: 4",
     "model.num_layers", "32 layers cannot be cut into 3 model chunks"),
    ("parallel: {pipeline: {size: 2, num_chunks: 2, interleaved_overlap: true}}|, micro_num: 3",
     "data.micro_num", "multiple of the pipeline size 2"),
])
def test_layouts_internevo_gets_wrong_or_refuses(write_chain, tmp_path, pretrain, field, says):
    pretrain, _, data_opts = pretrain.partition("|")
    found = by_path(problems(write_chain, tmp_path, "model: {preset: internlm2-7b}\n" + pretrain, data_opts=data_opts))
    assert says in found[f"stages.pretrain.{field}"].message, found


def test_isp_in_cpu_smoke_mode_is_refused_with_what_works(write_chain, tmp_path):
    found = problems(write_chain, tmp_path, "model: {preset: tiny}\nparallel: {tensor: {size: 2, mode: isp}, "
                     "weight: {size: 2}}", device="cpu",
                     launcher="launcher: {kind: torchrun, nproc_per_node: 2}\n")
    assert [p.path for p in found] == ["stages.pretrain.parallel.tensor.mode"]
    assert "isp cannot train correctly in CPU smoke mode" in found[0].message
    assert "tensor.mode mtp" in found[0].hint and "use_flash_attn: true" in found[0].hint
