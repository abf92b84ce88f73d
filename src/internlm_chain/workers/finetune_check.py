"""Run XTuner's dataset check on one data source; on failure, say which file, line and field is wrong.

    python finetune_check.py --config CHECK_CFG.py --kind openai|alpaca|text --report OUT.json FILE...

XTuner's `check_custom_dataset` loads the whole file with `datasets` and pushes a sample through the map
function, template and tokenizer; its errors (a pyarrow cast error, a KeyError in a map function) rarely
name the row. When it fails this scans every row and prints the first bad one next to XTuner's message,
and writes both to the report the stage reads. Exit status: XTuner's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

from finetune_rows import first_problem  # sibling module (stdlib only)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--kind", required=True, choices=["openai", "alpaca", "text"])
    ap.add_argument("--report", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    tail: deque[str] = deque(maxlen=60)
    proc = subprocess.Popen([sys.executable, "-m", "xtuner.tools.check_custom_dataset", args.config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        tail.append(line.rstrip("\n"))
    rc = proc.wait()
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    if rc == 0:
        report.write_text(json.dumps({"ok": True, "files": args.files}), encoding="utf-8")
        return 0
    upstream = next((ln for ln in reversed(tail) if ln and not ln.startswith((" ", "\t", "Traceback"))),
                    f"exit status {rc}")
    ours = first_problem([Path(f) for f in args.files], args.kind, limit=None)
    report.write_text(json.dumps({"ok": False, "xtuner": upstream, "row": ours, "files": args.files}),
                      encoding="utf-8")
    print(f"ichain: XTuner's dataset check failed: {upstream}", flush=True)
    if ours:
        print(f"ichain: first bad row: {ours}", flush=True)
    return rc or 1


if __name__ == "__main__":
    sys.exit(main())
