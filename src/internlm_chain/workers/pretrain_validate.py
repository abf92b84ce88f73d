"""Validate a rendered InternEvo config with InternEvo's own loader, then its sanity rules (CPU, no GPUs).

`Config.from_file` is what InternEvo's launch calls, so a config it cannot read fails here exactly as it
would on the cluster; the arithmetic of `args_sanity_check` / `init_parallel_groups` (which need a live
process group upstream) is applied by pretrain_rules.check for the requested world size.
Prints and writes {"ok", "world_size", "sizes", "findings": [{"key", "message", "rule"}]}; exit 0 when
the config passes, 1 when it breaks a rule, 2 when InternEvo cannot load it. Runs in the `internevo`
runtime; never imports internlm_chain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_rules  # noqa: E402


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

    report: dict = {"config": args.config, "world_size": args.world_size}
    try:
        from internlm.core.context import Config

        cfg = _plain(Config.from_file(args.config))
    except Exception as exc:  # whatever InternEvo's loader raises is the finding
        report.update(ok=False, load_error=f"{type(exc).__name__}: {exc}", findings=[])
        code = 2
    else:
        findings = pretrain_rules.check(cfg, args.world_size)
        report.update(ok=not findings, sizes=pretrain_rules.parallel_sizes(cfg, args.world_size),
                      findings=[{"key": k, "message": m, "rule": r} for k, m, r in findings],
                      loader="internlm.core.context.Config.from_file")
        code = 0 if not findings else 1
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
