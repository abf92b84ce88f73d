"""Draw a bar chart comparing models per dataset (inside a runtime that has matplotlib).

    python eval_chart.py REPORT.json OUT.png

REPORT.json is the report internlm-chain wrote: {"scores": [{"model", "dataset", "metric", "score"}...]}.
One group of bars per dataset (its main metric), one bar per model.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    report_path, out = argv
    with open(report_path, encoding="utf-8") as fh:
        report = json.load(fh)
    main_metric: dict[str, str] = {}
    values: dict[tuple[str, str], float] = {}
    models: list[str] = [m["abbr"] for m in report.get("models", [])]
    for row in report.get("scores", []):
        ds = row["dataset"]
        main_metric.setdefault(ds, row["metric"])
        if row["metric"] == main_metric[ds]:
            values[(ds, row["model"])] = float(row["score"])
    datasets = list(main_metric)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(datasets) * max(1, len(models)) * 0.6 + 2), 3.6))
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(datasets))]
        ys = [values.get((ds, model), 0.0) for ds in datasets]
        bars = ax.bar(xs, ys, width=width, label=model)
        for bar, ds in zip(bars, datasets, strict=False):
            if (ds, model) not in values:
                bar.set_hatch("//")  # not evaluated (e.g. perplexity needs a base model)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(datasets))])
    ax.set_xticklabels([f"{ds}\n({main_metric[ds]})" for ds in datasets], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("OpenCompass scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
