"""Check deploy settings with LMDeploy's own engine config objects (on CPU; no engine is built).

Runs inside the `lmdeploy` runtime:  python deploy_check.py '{"backend": "turbomind", "tp": 2, ...}'
Prints {"ok": true} or {"ok": false, "error": "..."} and exits 0 / 1.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    s = json.loads(argv[0])
    try:
        from lmdeploy.messages import PytorchEngineConfig, TurbomindEngineConfig

        common = {"tp": s["tp"], "session_len": s.get("session_len"), "quant_policy": s["quant_policy"],
                  "cache_max_entry_count": s["cache_max_entry_count"], "dtype": s.get("dtype", "auto")}
        if s.get("max_batch_size"):
            common["max_batch_size"] = s["max_batch_size"]
        if s.get("backend") == "pytorch":
            PytorchEngineConfig(**common)
        else:
            TurbomindEngineConfig(model_format=s.get("model_format"), **common)
    except Exception as exc:  # the engine config's own message is the point
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
