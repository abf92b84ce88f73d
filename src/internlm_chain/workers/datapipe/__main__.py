"""python -m datapipe run --config OUT/pipeline.json | demo OUT_DIR [--seed N] [--docs N]"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="datapipe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline described by a pipeline.json")
    r.add_argument("--config", required=True)
    d = sub.add_parser("demo", help="write the deterministic zh+en demo corpus")
    d.add_argument("out")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--docs", type=int, default=200)
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        from .demo_corpus import write_demo

        print(write_demo(args.out, seed=args.seed, n_docs=args.docs))
        return 0
    from .pipeline import run
    from .plan import RunConfig

    report = run(RunConfig.load(args.config))
    print(f"docs in {report['docs_in']}, kept {report['docs_kept']}, malformed {report['malformed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
