#!/usr/bin/env python3
"""Our data pipeline vs datatrove's stock equivalent on the same zh+en corpus with planted duplicates.

    scripts/bench_data.py [--docs 20000] [--corpus DIR] [--work DIR] [--python RUNTIME_PYTHON]

The corpus comes from workers/datapipe/demo_corpus.py (`make_corpus`: zh/en documents plus planted
near and exact copies, the truth kept in DIR/.truth.json); `--corpus DIR` reuses one. This process
(any Python 3) starts each contender as a child with the data runtime's interpreter and reads the
child's CPU time and peak RSS from wait4(), so both are measured the same way:

- ours: `python -m datapipe run` with one worker and the steps normalise, langid, rules,
  dedup_exact, dedup_near (clean output only): a superset of the work below.
- datatrove 0.10.1, one worker: JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter ->
  C4QualityFilter -> JsonlWriter, then its 4-stage MinHash (signatures, buckets, cluster, filter)
  over the filtered output. Timed as one child.
- datatrove's MinHash alone over the unfiltered corpus (a third child, not timed against ours):
  its Gopher stop-word rule drops every Chinese document, so only this run says how its dedup
  does on Chinese.

docs/s per core = input documents / child CPU seconds (user + sys); on a shared machine CPU time is
what a core actually spent, wall time mostly measures waiting. MB/s per core likewise with input
bytes. Near-duplicate precision/recall per language, from the documents each run removed:
recall = planted near copies whose (copy, original) pair was collapsed (one of the two removed,
something of the family kept); precision = removed documents that belong to a planted family
which still has a kept member.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ROOT / "src" / "internlm_chain" / "workers"
SHARDS = 4
OUR_STEPS = ["normalise", "langid", "rules", "dedup_exact", "dedup_near"]


# ---- corpus ---------------------------------------------------------------------------------------------
def write_corpus(out: Path, n_docs: int, seed: int) -> Path:
    sys.path.insert(0, str(WORKERS))
    from datapipe.demo_corpus import make_corpus

    out.mkdir(parents=True, exist_ok=True)
    records, truth = make_corpus(seed, n_docs)
    truth["lang"] = {r["id"]: r["lang"] for r in records}
    fhs = [open(out / f"part-{i}.jsonl", "w", encoding="utf-8") for i in range(SHARDS)]  # noqa: SIM115
    for k, rec in enumerate(records):
        fhs[k % SHARDS].write(json.dumps({"id": rec["id"], "text": rec["text"]}, ensure_ascii=False) + "\n")
    for fh in fhs:
        fh.close()
    (out / ".truth.json").write_text(json.dumps(truth, ensure_ascii=False), encoding="utf-8")
    return out


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.suffix == ".jsonl" and not p.name.startswith("."))


# ---- children ---------------------------------------------------------------------------------------------
def run_child(argv: list[str], env: dict, log: Path) -> dict:
    """Wall and CPU seconds, peak RSS of one child (its own wait4 rusage: children it waited for included)."""
    import subprocess

    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}); log {log}:\n{tail}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}


def ours(python: str, corpus: Path, work: Path):
    out = work / "ours"
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"out_dir": str(out), "inputs": [str(p) for p in corpus_files(corpus)], "workers": 1,
           "steps": [{"name": s} for s in OUR_STEPS], "outputs": ["clean"]}
    (out / "pipeline.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(WORKERS), "MPLBACKEND": "Agg"}
    m = run_child([python, "-m", "datapipe", "run", "--config", str(out / "pipeline.json")], env, work / "ours.log")
    removed = set()
    for f in (out / "rejects").glob("*.jsonl"):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if rec.get("step", "").startswith("dedup"):
                    removed.add(rec["id"])
    kept = {json.loads(line)["id"] for f in (out / "clean").glob("*.jsonl") for line in open(f, encoding="utf-8")}
    return m, removed, kept


def datatrove(python: str, corpus: Path, work: Path, filters: bool, name: str):
    out = work / name
    env = {**os.environ, "PYTHONPATH": str(WORKERS)}
    m = run_child([python, str(Path(__file__).resolve()), "_datatrove", str(corpus), str(out)] +
                  (["--filters"] if filters else []), env, work / f"{name}.log")
    removed = _ids(out / "removed")
    kept = _ids(out / "deduped")
    return m, removed, kept


def _ids(folder: Path) -> set[str]:
    import gzip

    ids = set()
    for f in folder.glob("*.jsonl*"):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            ids.update(json.loads(line)["id"] for line in fh)
    return ids


def datatrove_child(corpus: str, out: str, filters: bool) -> None:
    """Runs inside the data runtime: datatrove's stock filters and 4-stage MinHash, one worker."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    def run(pipeline, tasks=1, name=""):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{out}/logs/{name}",
                              skip_completed=False).run()

    source = corpus
    if filters:
        run([JsonlReader(corpus, glob_pattern="*.jsonl"), GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(), JsonlWriter(f"{out}/filtered", compression=None)], name="filters")
        source = f"{out}/filtered"
    cfg = MinhashConfig()  # stock: 5-grams, 14 buckets x 8 hashes, English word tokenizer
    run([JsonlReader(source, glob_pattern="*.jsonl"), MinhashDedupSignature(f"{out}/sigs", config=cfg)],
        name="sigs")
    run([MinhashDedupBuckets(f"{out}/sigs", f"{out}/buckets", config=cfg)], tasks=cfg.num_buckets, name="buckets")
    run([MinhashDedupCluster(f"{out}/buckets", f"{out}/remove_ids", config=cfg)], name="cluster")
    run([JsonlReader(source, glob_pattern="*.jsonl"),
         MinhashDedupFilter(f"{out}/remove_ids", exclusion_writer=JsonlWriter(f"{out}/removed", compression=None)),
         JsonlWriter(f"{out}/deduped", compression=None)], name="filter")


# ---- scoring ---------------------------------------------------------------------------------------------
def score(truth: dict, removed: set[str], kept: set[str]) -> dict:
    family = {}
    for kind in ("near", "exact"):
        for copy, orig in truth[kind].items():
            family[copy] = orig
            family.setdefault(orig, orig)
    kept_families = {family[i] for i in kept if i in family}
    res = {}
    for lang in ("zh", "en"):
        pairs = [(c, o) for c, o in truth["near"].items() if truth["lang"][c] == lang]
        hit = sum(1 for c, o in pairs if (c in removed or o in removed) and o in kept_families)
        rem = [i for i in removed if truth["lang"][i] == lang]
        good = sum(1 for i in rem if i in family and family[i] in kept_families)
        res[lang] = {"recall": hit / len(pairs) if pairs else float("nan"),
                     "precision": good / len(rem) if rem else float("nan"),
                     "removed": len(rem), "planted_near": len(pairs)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000, help="original documents (copies come on top)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", type=Path, help="reuse a corpus written by this script")
    ap.add_argument("--work", type=Path, help="working directory (default: a temp dir)")
    ap.add_argument("--python", help="the data runtime's python (default: $ICHAIN_RUNTIME_DATA or the synced one)")
    ap.add_argument("--skip-datatrove", action="store_true", help="only time our pipeline")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    python = args.python or os.environ.get("ICHAIN_RUNTIME_DATA") or str(
        Path(os.environ.get("ICHAIN_CACHE", Path.home() / ".cache" / "internlm-chain")) / "envs/data/bin/python")
    if not Path(python).exists():
        raise SystemExit(f"data runtime not found at {python}: run `ichain env sync data` or pass --python")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or write_corpus(work / "corpus", args.docs, args.seed)
    truth = json.loads((corpus / ".truth.json").read_text(encoding="utf-8"))
    n_docs = len(truth["lang"])
    n_bytes = sum(p.stat().st_size for p in corpus_files(corpus))
    print(f"corpus {corpus}: {n_docs} documents ({n_bytes / 1e6:.1f} MB; {len(truth['near'])} near and "
          f"{len(truth['exact'])} exact copies planted); work dir {work}; cpus {os.cpu_count()}")

    results = {}
    runs = [("ours", lambda: ours(python, corpus, work))]
    if not args.skip_datatrove:
        runs += [("datatrove", lambda: datatrove(python, corpus, work, True, "datatrove")),
                 ("datatrove-minhash-only", lambda: datatrove(python, corpus, work, False, "datatrove-minhash"))]
    for name, fn in runs:
        m, removed, kept = fn()
        m["docs_per_s_core"] = n_docs / m["cpu_s"]
        m["mb_per_s_core"] = n_bytes / 1e6 / m["cpu_s"]
        m["kept"] = len(kept)
        m["dedup"] = score(truth, removed, kept)
        results[name] = m
        d = m["dedup"]
        print(f"{name:24s} cpu {m['cpu_s']:7.1f}s  wall {m['wall_s']:7.1f}s  {m['docs_per_s_core']:8.0f} docs/s/core  "
              f"{m['mb_per_s_core']:6.2f} MB/s/core  peak RSS {m['peak_rss_mb']:6.0f} MB  kept {len(kept)}")
        for lang in ("zh", "en"):
            print(f"{'':24s} near-dup {lang}: recall {d[lang]['recall']:.3f}  precision {d[lang]['precision']:.3f}  "
                  f"({d[lang]['removed']} removed, {d[lang]['planted_near']} near copies planted)")
    if "datatrove" in results:
        ratio = results["ours"]["docs_per_s_core"] / results["datatrove"]["docs_per_s_core"]
        results["ratio_docs_per_s_core"] = ratio
        print(f"ours / datatrove (filters + MinHash): {ratio:.1f}x docs/s per core (target >= 10x)")
    ok = all(results["ours"]["dedup"][lang]["recall"] >= 0.95 and results["ours"]["dedup"][lang]["precision"] >= 0.98
             for lang in ("zh", "en"))
    print(f"near-dup targets (recall >= 0.95, precision >= 0.98, zh and en): {'met' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_datatrove":
        datatrove_child(sys.argv[2], sys.argv[3], "--filters" in sys.argv)
        sys.exit(0)
    sys.exit(main())
