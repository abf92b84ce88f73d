"""Lock files: parsing exact pins, header directives, which locks exist, and the shipped ones themselves."""

from __future__ import annotations

import pytest

from internlm_chain.runtimes import resolve
from internlm_chain.runtimes.locks import RUNTIMES, lock_digest, lock_path, parse_lock, shipped, variant_of

LOCK = """\
# Why: pins measured here.
# triton is left out on purpose (bitsandbytes 0.45 breaks with it).
# ichain-import: xtuner mmengine
# ichain-key: XTuner Torch
--extra-index-url file:///opt/pypi/simple
torch==2.13.0+cpu ; sys_platform == "linux"
    # via xtuner
Transformers_Stream.Generator==0.0.5
xtuner[deepspeed]==0.2.0 \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
mmengine===0.10.6  # an inline comment
"""


def test_parse_pins_markers_extras_hashes_and_directives(tmp_path):
    path = tmp_path / "xtuner-cpu.txt"
    path.write_text(LOCK)
    lock = parse_lock(path, "xtuner", "cpu")
    assert lock.problems == []
    assert {n: p.version for n, p in lock.pins.items()} == {
        "torch": "2.13.0+cpu", "transformers-stream-generator": "0.0.5", "xtuner": "0.2.0", "mmengine": "0.10.6"}
    assert lock.pins["torch"].marker == 'sys_platform == "linux"'
    assert lock.pins["xtuner"].line == 9
    assert lock.imports == ("xtuner", "mmengine")
    assert lock.keys == ("xtuner", "torch")
    assert lock.header[0] == "Why: pins measured here."


def test_unpinned_lines_are_reported(tmp_path):
    path = tmp_path / "x-cpu.txt"
    path.write_text("six>=1.0\nidna==3.7\ngit+https://example.org/repo.git\n")
    lock = parse_lock(path, "x", "cpu")
    assert list(lock.pins) == ["idna"]
    assert len(lock.problems) == 2 and "x-cpu.txt:1" in lock.problems[0] and "six>=1.0" in lock.problems[0]


def test_defaults_for_known_runtimes_and_unknown_ones(tmp_path):
    path = tmp_path / "agent-cpu.txt"
    path.write_text("lagent==0.2.4\nagentlego==0.2.0\ngriffe==0.49.0\nsix==1.16.0\n")
    lock = parse_lock(path, "agent", "cpu")
    assert lock.imports == ("lagent", "agentlego")
    assert lock.keys == ("lagent", "agentlego", "griffe")
    other = parse_lock(path, "data", "cpu")  # no directive, no default: no import probe, first pins as keys
    assert other.imports == () and other.keys == ("lagent", "agentlego", "griffe", "six")


def test_lock_lookup_falls_back_to_cpu_and_lists_what_exists(tmp_path):
    for name in ("xtuner-cpu.txt", "xtuner-cuda.txt", "serve-cpu-cpu.txt", "lmdeploy-cuda.txt", "README.md"):
        (tmp_path / name).write_text("six==1.16.0\n")
    assert lock_path("xtuner", "cuda", tmp_path).name == "xtuner-cuda.txt"
    assert lock_path("serve-cpu", "cuda", tmp_path).name == "serve-cpu-cpu.txt"
    assert lock_path("lmdeploy", "cpu", tmp_path) is None
    assert shipped(tmp_path) == {
        "xtuner": {"cpu": tmp_path / "xtuner-cpu.txt", "cuda": tmp_path / "xtuner-cuda.txt"},
        "lmdeploy": {"cuda": tmp_path / "lmdeploy-cuda.txt"},
        "serve-cpu": {"cpu": tmp_path / "serve-cpu-cpu.txt"},
    }
    assert variant_of(tmp_path / "serve-cpu-cpu.txt") == "cpu"


def test_locks_dir_override_is_what_the_runner_fingerprints(tmp_path, monkeypatch):
    (tmp_path / "xtuner-cpu.txt").write_text("six==1.16.0\n")
    monkeypatch.setenv("ICHAIN_LOCKS_DIR", str(tmp_path))
    assert resolve.lock_file("xtuner", "cuda") == tmp_path / "xtuner-cpu.txt"
    assert lock_digest(tmp_path / "xtuner-cpu.txt").startswith("sha256:")


SHIPPED = [(rt, v, p) for rt, variants in shipped(resolve.LOCKS_DIR).items() for v, p in variants.items()]


def test_the_expected_locks_are_shipped():
    names = {p.name for _, _, p in SHIPPED}
    for expected in ("xtuner-cpu.txt", "opencompass-cpu.txt", "agent-cpu.txt", "serve-cpu-cpu.txt",
                     "internevo-cpu.txt", "lmdeploy-cuda.txt"):
        assert expected in names, f"{expected} is not shipped in {resolve.LOCKS_DIR}"


@pytest.mark.parametrize("runtime,variant,path", SHIPPED, ids=[p.name for _, _, p in SHIPPED])
def test_shipped_lock_is_exact_and_explains_itself(runtime, variant, path):
    assert runtime in RUNTIMES, f"{path.name}: unknown runtime"
    lock = parse_lock(path, runtime, variant)
    assert lock.problems == []
    assert len(lock.pins) >= 1
    assert sum(1 for line in lock.header if line) >= 3, f"{path.name}: the header must say why its pins exist"
    assert lock.imports, f"{path.name}: no import probe for doctor"
    for key in lock.keys:
        assert key in lock.pins
