#!/usr/bin/env python3
"""Median wall time of `ichain --help` and `ichain config validate configs/quickstart.yaml` (10 runs each),
next to bare `python -c pass`. Target: each at most 0.3 s above bare Python."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 10
TARGET_S = 0.3


def median_time(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    py = sys.executable
    bare = median_time([py, "-c", "pass"])
    rows = [("python -c pass", bare)]
    for label, args in [("ichain --help", ["--help"]),
                        ("ichain config validate configs/quickstart.yaml",
                         ["config", "validate", "configs/quickstart.yaml"])]:
        rows.append((label, median_time([py, "-m", "internlm_chain", *args])))
    ok = True
    for label, t in rows:
        over = t - bare
        verdict = "" if label.startswith("python") else ("ok" if over <= TARGET_S else "OVER TARGET")
        ok &= verdict != "OVER TARGET"
        print(f"{label:50s} median {t * 1000:7.1f} ms   (+{over * 1000:6.1f} ms over bare) {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
