"""Fixes InternEvo needs here, shared by the training driver and the HF converter.

- Its distributed init breaks on Python >= 3.11.4 (bracketed IPv4 in the init URL).
- CPU smoke mode: InternEvo only knows accelerators; on a machine without one its CUDA accelerator object is patched so
the real code paths run: gloo instead of NCCL, the CPU RNG state instead of CUDA's, no-op streams,
events and memory queries. Runs inside the `internevo` runtime; must not import internlm_chain.
"""

from __future__ import annotations

import contextlib
import re


def fix_bracketed_ipv4() -> None:
    """InternEvo builds `tcp://[{host}]:{port}`; Python >= 3.11.4 rejects brackets around anything but an
    IPv6 address (`ValueError: An IPv4 address cannot be in brackets`). Unbracket non-IPv6 hosts."""
    import torch.distributed as dist

    original = dist.init_process_group
    pattern = re.compile(r"^tcp://\[([^\]]+)\]:(\d+)$")

    def init_process_group(*args, **kwargs):
        method = kwargs.get("init_method")
        m = pattern.match(method or "")
        if m and ":" not in m.group(1):
            kwargs["init_method"] = f"tcp://{m.group(1)}:{m.group(2)}"
        return original(*args, **kwargs)

    dist.init_process_group = init_process_group


class _NoopStream:
    def __init__(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def wait_stream(self, *args):
        pass

    def wait_event(self, *args):
        pass

    def record_event(self, *args):
        return _NoopEvent()


class _NoopEvent(_NoopStream):
    def record(self, *args):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def cpu_smoke_patches() -> None:
    """Make InternEvo's CUDA accelerator usable on CPU: gloo, CPU RNG, no-op streams, events, memory."""
    import torch
    from internlm.accelerator import get_accelerator
    from internlm.core.context import parallel_context

    acc = get_accelerator()
    acc._communication_backend_name = "gloo"
    acc.get_rng_state = lambda device_index=None: torch.get_rng_state()
    acc.set_rng_state = lambda state, device_index=None: torch.set_rng_state(state)
    acc.manual_seed = lambda seed: torch.manual_seed(seed)
    acc.manual_seed_all = lambda seed: torch.manual_seed(seed)
    acc.synchronize = lambda device_index=None: None
    acc.empty_cache = lambda: None
    acc.set_device = lambda device_index: None
    acc.current_stream = lambda device_index=None: _NoopStream()
    acc.default_stream = lambda device_index=None: _NoopStream()
    acc.stream = lambda stream: contextlib.nullcontext()
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
                 "memory_cached", "max_memory_cached"):
        setattr(acc, name, lambda device_index=None: 0)
    acc.reset_peak_memory_stats = lambda device_index=None: None
    cls = type(acc)
    cls.Stream = property(lambda self: _NoopStream)  # properties on the class: instance attributes lose
    cls.Event = property(lambda self: _NoopEvent)

    # set_seed asserts an accelerator is present before seeding the (here: CPU) RNG states
    set_seed = parallel_context.ParallelContext.set_seed

    def cpu_set_seed(self, seed, dpseed_with_tpoffset=False):
        is_available = acc.is_available
        acc.is_available = lambda: True
        try:
            return set_seed(self, seed, dpseed_with_tpoffset)
        finally:
            acc.is_available = is_available

    parallel_context.ParallelContext.set_seed = cpu_set_seed
    _flat_collectives()


def _flat_collectives() -> None:
    """Give gloo the two collectives the way NCCL takes them (ISP and sequence parallel use them).

    - NCCL's all_gather_into_tensor / reduce_scatter_tensor only check element counts: the big tensor is
      the ranks' tensors laid end to end. InternEvo relies on that and gathers activations "along dim 1"
      into a [1, ws·seq, h] buffer; gloo insists on [ws·n, ...] and raises `invalid tensor size`. The
      same memory viewed as [ws·n, ...] is exactly what NCCL would write.
    - ISP all-gathers weight shards, which require grad. gloo copies into views of the output when the
      work is waited on, and autograd refuses that in-place copy (`A view was created in no_grad mode and
      is being modified inplace`); NCCL writes the buffer directly. c10d collectives are not
      differentiable either way (InternEvo reduce-scatters the gradients itself): the input is detached.
    """
    import torch.distributed as dist

    gather, scatter = dist.all_gather_into_tensor, dist.reduce_scatter_tensor

    def as_stack(big, small):
        n = big.numel() // max(1, small.numel())
        if big.is_contiguous() and big.numel() == n * small.numel() and big.shape[:1] != (n * small.shape[0],):
            return big.view(n * small.shape[0], *small.shape[1:])
        return big

    def all_gather_into_tensor(output_tensor, input_tensor, *args, **kwargs):
        input_tensor = input_tensor.detach().contiguous()
        return gather(as_stack(output_tensor, input_tensor), input_tensor, *args, **kwargs)

    def reduce_scatter_tensor(output, input, *args, **kwargs):
        input = input.detach().contiguous()
        return scatter(output, as_stack(input, output), *args, **kwargs)

    dist.all_gather_into_tensor = all_gather_into_tensor
    dist.reduce_scatter_tensor = reduce_scatter_tensor


PROBE_SHAPE = (2, 12)


def probe_input_ids(vocab: int):
    """The fixed batch every logits comparison uses (driver, converter, verifier see the same ids)."""
    import torch

    return torch.randint(3, vocab, PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
