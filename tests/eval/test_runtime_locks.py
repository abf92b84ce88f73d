"""OpenCompass runs Hugging Face models in-process (HuggingFacewithChatTemplate / HuggingFaceBaseModel): every
lock the eval stage can be given must carry torch, and a transformers below 5 (its HF wrappers break on 5.x)."""

from __future__ import annotations

import pytest

from internlm_chain.runtimes.locks import lock_path, parse_lock, variant_of
from internlm_chain.runtimes.needs import stage_runtimes
from internlm_chain.runtimes.resolve import variant_for


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_eval_runtime_lock_can_run_an_in_process_hf_model(device):
    runtimes = stage_runtimes("eval", device)
    assert runtimes
    variant = variant_for(None, device)
    for runtime in runtimes:
        path = lock_path(runtime, variant)
        assert path is not None and variant_of(path) == variant, (runtime, variant, path)
        lock = parse_lock(path, runtime, variant)
        assert not lock.problems, lock.problems
        assert {"torch", "transformers", "opencompass"} <= set(lock.pins), path.name
        assert int(lock.pins["transformers"].version.split(".")[0]) < 5, path.name
        cuda_libs = [n for n in lock.pins if n.startswith("nvidia-cuda-runtime")]
        assert bool(cuda_libs) == (variant == "cuda"), f"{path.name}: torch {lock.pins['torch'].version}"
