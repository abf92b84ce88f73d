"""`ichain pretrain --validate`: our checks in-process, then InternEvo's loader and rules in its runtime.

Nothing is trained and nothing is marked done; the rendered config goes to a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from internlm_chain.errors import ChainError, Problem


def _context(loaded):
    """The pretrain context, with outputs of earlier stages that have not run yet predicted (as dry-run does)."""
    from internlm_chain.chain.runner import ChainRunner

    runner = ChainRunner(loaded, quiet=True)
    planner = runner.planner
    for dep in planner.dependencies("pretrain"):
        if not any(k.split(".")[0] == dep for k in planner.artifacts):
            planner.artifacts.update(planner.predicted_outputs(planner.context(dep)))
    return planner.context("pretrain")


def validate_with_upstream(config: Path | None, sets: list[str], as_json: bool = False, **flags) -> dict:
    from internlm_chain.cli.common import load_with_launch_flags, require_config
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.stages.pretrain.stage import STAGE

    loaded = load_with_launch_flags(require_config(config, "pretrain"), sets, ["pretrain"], **flags)
    if loaded.config.stages.pretrain is None:
        raise ChainError(loaded.problem("stages.pretrain", "the chain file has no stages.pretrain section"))
    ctx = _context(loaded)
    problems = STAGE.validate(ctx)
    if problems:
        raise ChainError(problems)
    nodes, per_node = STAGE.world(ctx)
    world = nodes * per_node
    _, text = STAGE.rendered(ctx)
    with tempfile.TemporaryDirectory(prefix="ichain-pretrain-validate-") as tmp:
        cfg_path, report_path = Path(tmp) / "internevo_config.py", Path(tmp) / "validate.json"
        job = STAGE.validate_job(ctx, cfg_path, text, report_path)
        exe = job.argv[0]
        if "/" in exe and not Path(exe).exists():
            raise ChainError(Problem(f"pretrain --validate: runtime 'internevo' is not synced ({exe} is missing)",
                                     hint="run `ichain env sync internevo`; `ichain config validate` runs our "
                                          "own checks without it"))
        cfg_path.write_text(text, encoding="utf-8")
        res = subprocess.run(job.argv, cwd=tmp, env={**os.environ, **job.env}, capture_output=True, text=True)
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ChainError(Problem(f"pretrain --validate: the internevo runtime did not answer (exit "
                                     f"{res.returncode})", hint=(res.stderr or res.stdout).strip()[-800:])) from None
    if report.get("load_error"):
        raise ChainError(Problem(f"InternEvo's loader rejects the rendered config: {report['load_error']}",
                                 hint="run `ichain pretrain -c FILE --dry-run --show-files` to see it"))
    findings = [STAGE.rule_problem(ctx, f["key"], f["message"], f["rule"], world) for f in report["findings"]]
    if findings:
        raise ChainError(findings)
    sizes = report["sizes"]
    summary = {"ok": True, "world_size": world, "nodes": nodes, "gpus_per_node": per_node, **sizes,
               "loader": report.get("loader"), "device": ctx.device}
    if as_json:
        print_json(summary)
    else:
        out.print(f"pretrain: the InternEvo config is valid for {world} process(es) ({nodes} node(s) × {per_node}): "
                  f"data parallel {sizes['dp']} × pipeline {sizes['pp']} × tensor {sizes['tp']} ({sizes['mode']}), "
                  f"ZeRO-1 group {sizes['zero1']}"
                  + (f", weight parallel {sizes['wp']}" if sizes["wp"] > 1 else "")
                  + f" — loaded with {report.get('loader')} in the internevo runtime", markup=False)
    return summary

