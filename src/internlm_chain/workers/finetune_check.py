"""Run XTuner's dataset check on one data source; on failure, say which file, line and field is wrong.

    python finetune_check.py --config CHECK_CFG.py --kind openai|alpaca|text|preference --report OUT.json FILE...

XTuner's `check_custom_dataset` loads the data with `datasets` and pushes a random sample of 10 rows
through the map function, template and tokenizer; its errors rarely name the row, and a bad row outside
the sample only breaks training minutes later. So after XTuner's check this scans every row for the
fields the map function reads. Either failure prints and records (in the report the stage reads) the
first bad row — file, line, field — next to XTuner's message. Exit status 1 on any failure.

Preference rows (dpo/orpo/reward) have no `check_custom_dataset` of their own upstream: for them the
check is finetune_pairs.py, which tokenises every pair as XTuner will and builds XTuner's dataset.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

from finetune_rows import first_problem  # sibling module (stdlib only)

ROW = re.compile(r"^ichain-row: (.*)$")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Invalid|Interrupt)\b:?")


def _exception_summary(lines: list[str]) -> str:
    """The exception lines of a (possibly chained) traceback, root cause first: `datasets` wraps the
    informative pyarrow error in a generic one."""
    found: list[str] = []
    for line in lines:
        if EXCEPTION.match(line) and line not in found:
            found.append(line.strip())
    return " <- ".join(found[-3:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--kind", required=True, choices=["openai", "alpaca", "text", "preference"])
    ap.add_argument("--report", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    tail: deque[str] = deque(maxlen=400)
    check = ([sys.executable, str(Path(__file__).with_name("finetune_pairs.py")), args.config, *args.files]
             if args.kind == "preference" else
             [sys.executable, "-m", "xtuner.tools.check_custom_dataset", args.config])
    proc = subprocess.Popen(check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        tail.append(line.rstrip("\n"))
    rc = proc.wait()
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    ours = first_problem([Path(f) for f in args.files], args.kind, limit=None)
    tokenised = next((m.group(1) for line in tail if (m := ROW.match(line))), None)
    ours = ours or tokenised  # a pair that is well-formed JSON but does not tokenise as XTuner needs
    if rc == 0 and ours is None:
        report.write_text(json.dumps({"ok": True, "files": args.files}), encoding="utf-8")
        return 0
    if rc == 0:
        upstream = "its check of 10 sampled rows passed, but training maps every row"
    elif tokenised:
        upstream = "the pair does not tokenise as XTuner's preference dataset needs"
    else:
        upstream = _exception_summary(list(tail)) or f"exit status {rc}"
    report.write_text(json.dumps({"ok": False, "xtuner": upstream, "row": ours, "files": args.files}),
                      encoding="utf-8")
    print(f"ichain: XTuner's dataset check: {upstream}", flush=True)
    if ours:
        print(f"ichain: first bad row: {ours}", flush=True)
    return rc or 1


if __name__ == "__main__":
    sys.exit(main())
