"""report.json (numbers) and a self-contained report.html (PNG plots inlined as base64)."""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os

from . import stats as S

SAMPLES_PER_REASON = 3


def gather(cfg, sids) -> dict:
    work = cfg.work
    total = S.new()
    per_pass = []
    for pdir in sorted(glob.glob(os.path.join(work, "stats", "p*")), key=lambda d: int(os.path.basename(d)[1:])):
        st = S.new()
        for sid in sids:
            path = os.path.join(pdir, sid + ".json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    S.merge(st, json.load(fh))
        per_pass.append(st)
        S.merge(total, st)
    decisions = {}
    for path in sorted(glob.glob(os.path.join(work, "stats", "decide", "*.json"))):
        with open(path, encoding="utf-8") as fh:
            decisions[os.path.basename(path)[:-5].split("-", 1)[1]] = json.load(fh)
    order = [s["name"] for s in cfg.steps]
    drops = {step: total["drops"].get(step, {}) for step in order if step in total["drops"]}
    for step in total["drops"]:
        drops.setdefault(step, total["drops"][step])
    kept = total["kept"]
    report = {
        "docs_in": total["docs_in"], "malformed": total["malformed"], "docs_kept": kept,
        "kept_chars": total["kept_chars"],
        "dropped_per_step": {k: sum(v.values()) for k, v in drops.items()},
        "dropped_per_reason": drops, "languages": total["langs"], "review": total["review"],
        "pii_masked": total["pii_masked"], "lines_removed": total["lines_removed"],
        "duplicate_clusters": {k: v.get("cluster_sizes", {}) for k, v in decisions.items() if "cluster_sizes" in v},
        "decisions": decisions,
        "histograms": {"length_log10x4": total["len_hist"], "lang_score_x20": total["lang_score_hist"],
                       "quality_x20": total["quality_hist"]},
        "steps": cfg.steps, "outputs": _outputs(cfg),
        "samples": _samples(cfg.out_dir),
    }
    return report


def _outputs(cfg) -> dict:
    out = {}
    tok = os.path.join(cfg.out_dir, "internevo")
    if os.path.isdir(tok):
        import numpy as np

        files = sorted(glob.glob(os.path.join(tok, "*", "*.bin")))
        out["internevo_files"] = len(files)
        out["internevo_tokens"] = int(sum(np.load(f + ".meta")[:, 1].sum() for f in files if os.path.getsize(f)))
    for name in ("pretrain", "sft"):
        p = os.path.join(cfg.out_dir, "xtuner", name + ".jsonl")
        if os.path.exists(p):
            with open(p, "rb") as fh:
                out[f"xtuner_{name}_records"] = sum(1 for _ in fh)
    return out


def _samples(out_dir: str) -> dict:
    found: dict[str, dict[str, list]] = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "rejects", "*.p*.jsonl"))):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                bucket = found.setdefault(rec["step"], {}).setdefault(rec["reason"].split(":", 1)[0], [])
                if len(bucket) < SAMPLES_PER_REASON:
                    sample = {"id": rec["id"], "reason": rec["reason"], "text": rec.get("text", "")[:300]}
                    if "dup_of" in rec:
                        sample["dup_of"] = rec["dup_of"]
                    bucket.append(sample)
    return found


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _subplots(figsize):
    # a Figure on the Agg canvas directly: importing pyplot costs ~1 s of CPU per run for nothing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plots(report: dict) -> dict[str, str]:
    out = {}
    steps = list(report["dropped_per_step"])
    fig, ax = _subplots(figsize=(7, 3))
    remaining = [report["docs_in"]]
    for s in steps:
        remaining.append(remaining[-1] - report["dropped_per_step"][s])
    ax.bar(["input", *steps], remaining, color="#4c78a8")
    ax.set_ylabel("documents left")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("kept after each step")
    out["kept per step"] = _png(fig)
    if report["languages"]:
        fig, ax = _subplots(figsize=(4, 3))
        langs = sorted(report["languages"], key=report["languages"].get, reverse=True)
        ax.bar(langs, [report["languages"][x] for x in langs], color="#f58518")
        ax.set_title("language mix (kept)")
        out["language mix"] = _png(fig)
    for key, title, scale in (("length_log10x4", "document length (log10 chars)", 4),
                              ("lang_score_x20", "language score", 20), ("quality_x20", "quality score", 20)):
        hist = report["histograms"][key]
        if not hist:
            continue
        fig, ax = _subplots(figsize=(5, 3))
        for lang, bins in sorted(hist.items()):
            xs = sorted(int(b) for b in bins)
            ax.bar([x / scale for x in xs], [bins[str(x)] for x in xs], width=1 / scale, alpha=0.6, label=lang,
                   align="edge")
        ax.legend()
        ax.set_title(title)
        out[title] = _png(fig)
    for step, sizes in report["duplicate_clusters"].items():
        if not sizes:
            continue
        fig, ax = _subplots(figsize=(4, 3))
        xs = sorted(int(k) for k in sizes)
        ax.bar([str(x) for x in xs], [sizes[str(x)] for x in xs], color="#54a24b")
        ax.set_xlabel("cluster size")
        ax.set_title(f"{step}: duplicate clusters")
        out[f"{step} clusters"] = _png(fig)
    return out


def write_report(cfg, sids) -> dict:
    report = gather(cfg, sids)
    path = os.path.join(cfg.out_dir, "report.json")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, ensure_ascii=False)
    os.replace(path + ".tmp", path)
    images = plots(report)
    e = html.escape
    rows = "".join(f"<tr><td>{e(s)}</td><td>{e(r)}</td><td>{n}</td></tr>"
                   for s, reasons in report["dropped_per_reason"].items() for r, n in reasons.items())
    samples = "".join(
        f"<h3>{e(step)} / {e(reason)}</h3>" + "".join(
            f"<pre>{e(x['id'])}: {e(x['reason'])}{' (dup of ' + e(x['dup_of']) + ')' if 'dup_of' in x else ''}"
            f"\n{e(x['text'])}</pre>" for x in items)
        for step, reasons in report["samples"].items() for reason, items in reasons.items())
    imgs = "".join(f"<figure><img alt='{e(k)}' src='data:image/png;base64,{v}'><figcaption>{e(k)}</figcaption>"
                   f"</figure>" for k, v in images.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>data report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}figure{{display:inline-block}}
pre{{white-space:pre-wrap;background:#f4f4f4;padding:6px}}td,th{{padding:2px 10px}}</style></head><body>
<h1>Data report</h1>
<p>documents in: <b>{report['docs_in']}</b>, kept: <b>{report['docs_kept']}</b>, malformed: {report['malformed']},
sent to review: {report['review']}, languages: {e(json.dumps(report['languages'], ensure_ascii=False))},
PII masked: {e(json.dumps(report['pii_masked']))}</p>
{imgs}
<h2>Drops per step and reason</h2><table><tr><th>step</th><th>reason</th><th>documents</th></tr>{rows}</table>
<h2>Samples of dropped documents</h2>{samples}
</body></html>"""
    with open(os.path.join(cfg.out_dir, "report.html"), "w", encoding="utf-8") as fh:
        fh.write(doc)
    return report
