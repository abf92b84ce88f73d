"""Shipped locks vs Python 3.12, the Python of the offline GPU host (docs/gpu-smoke.md).

That host builds runtimes with `ichain env sync --host-torch` from wheels collected by `ichain env wheels
--python-version 3.12`; a pin with no cp312 wheel (and no pure-Python sdist to build) stops the whole runtime.
Checking PyPI takes network, so these tests hold what was measured (2026-11-29) and catch a lock that
reintroduces a known gap.
"""

from __future__ import annotations

import pytest
from packaging.version import Version

from internlm_chain.runtimes import hosttorch, resolve
from internlm_chain.runtimes.locks import parse_lock, shipped

# name → (last release known to lack a cp312 wheel, why). Every release up to it lacks one too.
NO_CP312 = {
    # Its last release below 0.14 is a Rust sdist only; transformers < 4.34 requires tokenizers < 0.14, which
    # is why the internevo locks carry transformers 4.35.2 rather than InternEvo's declared <4.30.
    "tokenizers": ("0.13.3", "tokenizers <= 0.13.3 has no cp312 wheel (Rust sdist only)"),
    # Only in a plain (not host-torch) sync: the host-torch mode takes torch from the host.
    "torch": ("2.1.2", "torch <= 2.1.2 has wheels for cp38-cp311 only (2.2 is the first with cp312)"),
}
# A transformers that caps tokenizers below 0.14 cannot be installed on 3.12 either.
TRANSFORMERS_NEEDS_OLD_TOKENIZERS = Version("4.34")

LOCKS = [(rt, v, p) for rt, variants in shipped(resolve.LOCKS_DIR).items() for v, p in variants.items()]
INTERNEVO = [(rt, v, p) for rt, v, p in LOCKS if rt == "internevo"]


def cp312_gaps(lock, host_torch: bool) -> list[str]:
    """The pins of `lock` known to have no cp312 wheel (host-provided pins skipped in host-torch mode)."""
    gaps = []
    for name, pin in lock.pins.items():
        if host_torch and hosttorch.from_host(name):
            continue
        if "python_version < \"3.12\"" in pin.marker or "python_full_version < '3.12'" in pin.marker:
            continue  # not installed on 3.12 at all
        known = NO_CP312.get(name)
        if known and Version(hosttorch.public(pin.version)) <= Version(known[0]):
            gaps.append(f"{name}=={pin.version}: {known[1]}")
        if name == "transformers" and Version(pin.version) < TRANSFORMERS_NEEDS_OLD_TOKENIZERS:
            gaps.append(f"transformers=={pin.version} requires tokenizers<0.14, which has no cp312 wheel")
    return gaps


@pytest.mark.parametrize("runtime,variant,path", LOCKS, ids=[p.name for _, _, p in LOCKS])
def test_host_torch_part_of_every_lock_installs_on_python_312(runtime, variant, path):
    assert cp312_gaps(parse_lock(path, runtime, variant), host_torch=True) == []


@pytest.mark.parametrize("runtime,variant,path", INTERNEVO, ids=[p.name for _, _, p in INTERNEVO])
def test_internevo_locks_install_on_python_312_even_with_their_own_torch(runtime, variant, path):
    lock = parse_lock(path, runtime, variant)
    if variant == "cpu":
        # torch 2.13.0+cpu is this machine's cp311 wheel in /opt/wheels; only its host-torch part must fit 3.12
        assert cp312_gaps(lock, host_torch=True) == []
    else:
        assert cp312_gaps(lock, host_torch=False) == []


@pytest.mark.parametrize("runtime,variant,path", LOCKS, ids=[p.name for _, _, p in LOCKS])
def test_a_lock_with_transformers_carries_its_own_tokenizers(runtime, variant, path):
    """A host-torch runtime also sees the host's site-packages: without its own tokenizers, transformers finds
    the host's and checks its version at import (transformers 4.29.2 beside a host's tokenizers 0.23.3:
    "tokenizers>=0.11.1,!=0.11.3,<0.14 is required ... but found tokenizers==0.23.3")."""
    lock = parse_lock(path, runtime, variant)
    if "transformers" in lock.pins:
        assert "tokenizers" in lock.pins


def test_the_check_catches_the_old_internevo_pins(tmp_path):
    old = tmp_path / "internevo-cuda.txt"
    old.write_text("internevo==0.5.2.dev20240525\ntorch==2.1.2\ntriton==2.1.0\ntransformers==4.29.2\n"
                   "tokenizers==0.13.3\nnumpy==1.26.4\n")
    lock = parse_lock(old, "internevo", "cuda")
    host = cp312_gaps(lock, host_torch=True)
    assert [g.split(":")[0] for g in host] == ["transformers==4.29.2 requires tokenizers<0.14, which has no cp312 "
                                                "wheel", "tokenizers==0.13.3"]
    assert "torch==2.1.2" in [g.split(":")[0] for g in cp312_gaps(lock, host_torch=False)]
    marked = tmp_path / "x-cuda.txt"
    marked.write_text('torch==2.2.2\ntriton==2.2.0 ; python_version < "3.12"\ntokenizers==0.15.2\n')
    assert cp312_gaps(parse_lock(marked, "x", "cuda"), host_torch=False) == []
