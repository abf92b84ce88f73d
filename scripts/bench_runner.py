#!/usr/bin/env python3
"""Runner overhead: re-running a fully completed six-stage chain, and dry-running it.

Builds a chain of cheap stages (tests/runner/fake_stages.py, via `plugin:`) in a temp dir, runs it
once, then times `ichain run FILE -q` (every stage up to date: a no-op, target < 1 s) and
`ichain run FILE --dry-run`, each as a fresh `ichain` process (interpreter start-up and imports
included, as a user sees it) and in-process (the runner's own work). Prints the median of 5.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "runner" / "fake_stages.py"
STAGES = {"data": "ECHO", "pretrain": "NEEDS_DATA", "finetune": "NEEDS_PRETRAIN", "eval": "NEEDS_FINETUNE",
          "deploy": "NEEDS_EVAL", "agent": "NEEDS_DEPLOY"}
REPEAT = 5


CPU: dict[tuple[str, ...], list[float]] = {}


def cli(*args: str) -> float:
    """Wall time of one `ichain` process; its CPU time (user+sys) is kept too: on a busy shared
    machine the wall time mostly measures waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "internlm_chain", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(args, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return took


def in_process(chain: Path, dry_run: bool) -> float:
    from internlm_chain.chain.runner import run_chain
    from internlm_chain.config.loader import load_chain

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcomes = run_chain(load_chain(chain), dry_run=dry_run, quiet=True)
    took = time.perf_counter() - start
    expected = "up to date"
    assert all(o.status == expected for o in outcomes), [(o.stage, o.status) for o in outcomes]
    return took


def median(fn) -> float:
    return statistics.median(fn() for _ in range(REPEAT))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ichain-bench-") as tmp:
        chain = Path(tmp) / "chain.yaml"
        chain.write_text("name: bench\nworkdir: wd\ndevice: cpu\nstages:\n" + "".join(
            f"  {s}: {{plugin: {FAKE}:{attr}}}\n" for s, attr in STAGES.items()))
        os.environ.setdefault("ICHAIN_CACHE", str(Path(tmp) / "cache"))
        first = cli("run", str(chain), "-q")
        rerun_cli = median(lambda: cli("run", str(chain), "-q"))
        dry_cli = median(lambda: cli("run", str(chain), "--dry-run"))
        rerun_in = median(lambda: in_process(chain, dry_run=False))
        dry_in = median(lambda: in_process(chain, dry_run=True))
    print(f"six-stage chain, first run:            {first:.3f} s")
    cpu_rerun = statistics.median(CPU[("run", str(chain), "-q")][1:])
    cpu_dry = statistics.median(CPU[("run", str(chain), "--dry-run")])
    print(f"re-run of the completed chain (ichain): {rerun_cli:.3f} s wall, {cpu_rerun:.3f} s CPU"
          f"  (median of {REPEAT}; target < 1 s)")
    print(f"dry-run of the whole chain (ichain):    {dry_cli:.3f} s wall, {cpu_dry:.3f} s CPU  (median of {REPEAT})")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"re-run, in-process (runner only):       {rerun_in:.3f} s")
    print(f"dry-run, in-process (runner only):      {dry_in:.3f} s")
    return 0 if rerun_cli < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
