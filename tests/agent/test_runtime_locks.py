"""`llm.hf_model` loads a Hugging Face model inside the agent runtime, on CPU and on GPU hosts alike: every lock
the agent stage can be given must carry a torch for that host and a transformers Lagent 0.2.4's wrapper accepts."""

from __future__ import annotations

import pytest

from internlm_chain.runtimes.locks import lock_path, parse_lock, variant_of
from internlm_chain.runtimes.needs import stage_runtimes
from internlm_chain.runtimes.resolve import variant_for


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_agent_runtime_lock_can_run_an_in_process_hf_model(device):
    runtimes = stage_runtimes("agent", device)
    assert runtimes
    variant = variant_for(None, device)
    for runtime in runtimes:
        path = lock_path(runtime, variant)
        # a GPU host falling back to the CPU lock would get a torch that cannot see the GPU
        assert path is not None and variant_of(path) == variant, (runtime, variant, path)
        lock = parse_lock(path, runtime, variant)
        assert not lock.problems, lock.problems
        assert {"torch", "transformers", "lagent", "agentlego"} <= set(lock.pins), path.name
        transformers = tuple(int(x) for x in lock.pins["transformers"].version.split(".")[:2])
        assert transformers <= (4, 41), f"{path.name}: lagent 0.2.4's HF wrapper breaks after transformers 4.41"
        torch = lock.pins["torch"].version
        cuda_libs = [n for n in lock.pins if n.startswith("nvidia-cuda-runtime")]
        if variant == "cuda":
            assert not torch.endswith("+cpu") and cuda_libs, f"{path.name}: torch {torch} has no CUDA runtime"
        else:
            assert torch.endswith("+cpu") and not cuda_libs, f"{path.name}: the CPU lock should not carry CUDA libs"
