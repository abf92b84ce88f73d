"""Stages that load a Hugging Face model in-process (eval: OpenCompass's HF wrappers; agent: `llm.hf_model`
through Lagent) need, in every lock the stage can be given on CPU and GPU hosts alike, a torch for that
host and a transformers their wrappers accept."""

from __future__ import annotations

import pytest

from internlm_chain.runtimes.locks import lock_path, parse_lock, variant_of
from internlm_chain.runtimes.needs import stage_runtimes
from internlm_chain.runtimes.resolve import variant_for

# stage → (packages its in-process model path imports, newest transformers (major, minor) it works with, why)
IN_PROCESS = {
    "eval": ({"torch", "transformers", "opencompass"}, (4, 99), "OpenCompass's HF wrappers break on transformers 5"),
    "agent": ({"torch", "transformers", "lagent", "agentlego"}, (4, 41),
              "lagent 0.2.4's HF wrapper breaks after transformers 4.41"),
}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("stage", sorted(IN_PROCESS))
def test_every_lock_of_the_stage_can_run_an_in_process_hf_model(stage, device):
    needed, newest, why = IN_PROCESS[stage]
    runtimes = stage_runtimes(stage, device)
    assert runtimes
    variant = variant_for(None, device)
    for runtime in runtimes:
        path = lock_path(runtime, variant)
        # a GPU host falling back to the CPU lock would get a torch that cannot see the GPU
        assert path is not None and variant_of(path) == variant, (runtime, variant, path)
        lock = parse_lock(path, runtime, variant)
        assert not lock.problems, lock.problems
        assert needed <= set(lock.pins), path.name
        transformers = tuple(int(x) for x in lock.pins["transformers"].version.split(".")[:2])
        assert transformers <= newest, f"{path.name}: {why}"
        torch = lock.pins["torch"].version
        cuda_libs = [n for n in lock.pins if n.startswith("nvidia-cuda-runtime")]
        if variant == "cuda":
            assert not torch.endswith("+cpu") and cuda_libs, f"{path.name}: torch {torch} has no CUDA runtime"
        else:
            assert not cuda_libs, f"{path.name}: the CPU lock should not carry CUDA libs"
