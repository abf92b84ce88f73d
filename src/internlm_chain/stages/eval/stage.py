"""The `eval` stage: OpenCompass scores models and endpoints on built-in and custom datasets.

Jobs: a preflight check inside the opencompass runtime (datasets local, endpoints answering, config
loadable), then `python -m opencompass.cli.main CFG` from a scratch directory (OpenCompass writes
tmp/, .cache/ and icl_inference_output/ into its CWD). OpenCompass exits 0 when tasks fail, so
`collect` decides success from what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from internlm_chain import workers
from internlm_chain.chain.artifacts import Artifact, EvalReport
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.base import JobResult, Stage, StageContext
from internlm_chain.stages.eval.render import builtin_access, builtin_modules, chat_templates, render_config
from internlm_chain.stages.eval.report import collect_scores, latest_run, render_table
from internlm_chain.stages.eval.resolve import KNOWN_BUILTIN_FILES, EvalPlan, resolve

WORKERS = Path(workers.__file__).parent
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


def paths(ctx: StageContext) -> dict[str, Path]:
    out = ctx.out_dir
    work = ctx.settings.work_dir
    return {
        "config": out / "opencompass_config.py",
        "plan": out / "plan.json",
        "scratch": out / "scratch",
        "work": Path(os.path.expanduser(work)) if work else out / "opencompass",
        "report": out / "report.json",
        "chart": out / "scores.png",
    }


def job_env(ctx: StageContext) -> dict[str, str]:
    env = dict(OFFLINE_ENV)
    if ctx.settings.data_dir:
        env["COMPASS_DATA_CACHE"] = str(_abs(ctx, ctx.settings.data_dir))
    else:  # never the user's ~/.cache: a missing copy must fail, not download
        env["COMPASS_DATA_CACHE"] = str(ctx.out_dir / "no-data-dir")
    if ctx.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _abs(ctx: StageContext, p: str) -> Path:
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else (ctx.chain.base_dir / path).resolve()


class EvalStage(Stage):
    name = "eval"
    runtime = "opencompass"
    needs = ("finetune",)

    # ---- validate --------------------------------------------------------------------------------
    def validate(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        problems: list[Problem] = []
        plan = resolve(ctx, problems)
        if not plan.models:
            problems.append(ctx.problem("models", "nothing to evaluate",
                                        "list `models:` or `endpoints:`, or set the chain's `model.path`"))
        if not s.datasets and not s.custom:
            problems.append(ctx.problem("datasets", "no dataset to evaluate on",
                                        "name built-in configs (datasets: [gsm8k_gen]) or custom files (custom:)"))
        predicted = {a.path for a in ctx.inputs.values()}
        for i, m in enumerate(s.models or []):
            full = str(_abs(ctx, m.path))
            if m.path not in predicted and not (Path(full) / "config.json").exists():
                why = "does not exist" if not Path(full).exists() else "has no config.json (not a Hugging Face model)"
                problems.append(ctx.problem(f"models.{i}.path", f"{full} {why}"))
            for key in ("tokenizer", "adapter"):
                value = getattr(m, key)
                if value and value not in predicted and not _abs(ctx, value).exists():
                    problems.append(ctx.problem(f"models.{i}.{key}", f"{_abs(ctx, value)} does not exist"))
        for m in plan.models:
            if m.chat_template and m.chat_template not in chat_templates():
                where = "model.chat_template" if m.source.startswith(("chain", "finetune")) else f"{m.source}.chat_template"
                problems.append(ctx.chain.problem(where if where.startswith("model.") else f"stages.eval.{where}",
                                                  f"no chat template '{m.chat_template}' for evaluating {m.abbr}, "
                                                  "whose tokenizer has none",
                                                  "known: " + ", ".join(sorted(chat_templates()))))
            if m.kind == "hf_base" and m.source.startswith("models.") and m.chat_template:
                problems.append(ctx.problem(f"{m.source}.chat_template", "base models are prompted without "
                                            "a chat template", "drop chat_template or use type: chat"))
        for i, e in enumerate(s.endpoints):
            m = next(x for x in plan.models if x.source == f"endpoints.{i}")
            if not m.tokenizer:
                problems.append(ctx.problem(f"endpoints.{i}.tokenizer_path", "OpenCompass needs a local tokenizer "
                                            "to count tokens offline", "set tokenizer_path or the chain's model.path"))
            elif not Path(m.tokenizer).exists() and m.tokenizer not in predicted:
                problems.append(ctx.problem(f"endpoints.{i}.tokenizer_path", f"{m.tokenizer} does not exist"))
            if e.api_key_env and e.api_key_env not in os.environ:
                problems.append(ctx.problem(f"endpoints.{i}.api_key_env",
                                            f"environment variable {e.api_key_env} is not set",
                                            f"export {e.api_key_env}=... before running"))
        if s.datasets:
            problems += self._check_data_dir(ctx, plan)
        if s.runner.kind == "slurm" and not s.runner.partition:
            problems.append(ctx.problem("runner.partition", "the Slurm runner needs a partition"))
        return problems

    def _check_data_dir(self, ctx: StageContext, plan: EvalPlan) -> list[Problem]:
        s = ctx.settings
        if not s.data_dir:
            return [ctx.problem("data_dir", "built-in datasets need a local copy of their files",
                                "set data_dir to the folder holding data/<dataset>/ (OpenCompass's "
                                "COMPASS_DATA_CACHE); nothing is downloaded")]
        root = _abs(ctx, s.data_dir)
        if not root.is_dir():
            return [ctx.problem("data_dir", f"{root} is not a directory")]
        problems = []
        for d in plan.datasets:
            if d.kind != "builtin":
                continue
            missing = [str(root / f) for f in KNOWN_BUILTIN_FILES.get(d.family or "", []) if not (root / f).exists()]
            if missing:
                problems.append(ctx.problem(d.source, f"{d.abbr}: missing {', '.join(missing)}",
                                            f"copy the OpenCompass '{d.family}' data there (offline: nothing is "
                                            "downloaded)"))
        return problems

    # ---- plan --------------------------------------------------------------------------------------
    def plan(self, ctx: StageContext) -> list[Job]:
        s = ctx.settings
        plan = resolve(ctx)
        p = paths(ctx)
        py = ctx.python(self.runtime)
        config = render_config(s, plan, ctx.chain.config.name)
        custom = {d.abbr for d in plan.datasets if d.kind == "custom"}
        plan_doc = {
            "models": [{"abbr": m.abbr, "kind": m.kind, "path": m.path, "url": m.url, "fingerprint": m.fingerprint,
                        "source": m.source, "api_key_env": m.api_key_env} for m in plan.models],
            "datasets": [{"abbr": d.abbr, "kind": d.kind, "mode": d.mode, "path": d.path, "module": d.module}
                         for d in plan.datasets],
            "combos": [list(c) for c in plan.combos if c[1] in custom],
            "builtin_access": {m.abbr: a for m in plan.models if (a := builtin_access(plan, m.abbr))},
            "skipped": [list(c) for c in plan.skipped],
            "work_dir": str(p["work"]),
        }
        env = job_env(ctx)
        gpus = max([m.num_gpus for m in plan.models] or [0])
        common = dict(stage=self.name, cwd=str(p["scratch"]), env=env, runtime=self.runtime)
        preflight = Job(name="preflight", argv=[*py, str(WORKERS / "eval_preflight.py"), str(p["config"])],
                        files={str(p["config"]): config,
                               **{str(p["config"].parent / n): t for n, t in builtin_modules(plan).items()},
                               str(p["plan"]): json.dumps(plan_doc, indent=2) + "\n"},
                        description="check datasets are local and endpoints answer", **common)
        # `-r latest` resumes an interrupted run (finished predictions are kept). Only in our own work dir:
        # the runner wipes it when the configuration changes, a user's work_dir may hold other runs.
        reuse = [] if s.work_dir else ["-r", "latest"]
        run = Job(name="opencompass",
                  argv=[*py, "-m", "opencompass.cli.main", str(p["config"]), "-w", str(p["work"]), *reuse],
                  resources=Resources(gpus_per_node=gpus if s.runner.kind == "local" else 0),
                  expected_outputs=[str(p["work"])],
                  description=f"{len(plan.models)} model(s) × {len(plan.datasets)} dataset(s), "
                              f"{len(plan.combos)} pair(s) on {s.runner.kind}", **common)
        return [preflight, run]

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        return {"report": EvalReport(path=str(final_dir / "report.json"))}

    # ---- collect -----------------------------------------------------------------------------------
    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        p = paths(ctx)
        plan_doc = json.loads(p["plan"].read_text(encoding="utf-8"))
        result = next((r for r in results if r.job.name == "opencompass"), None)
        log_path = result.log if result else None
        driver_log = _last_run_text(Path(log_path)) if log_path and Path(log_path).exists() else ""
        run = latest_run(p["work"])
        if run is None:
            raise StageFailed(Problem("OpenCompass wrote no results folder", hint=f"log: {log_path}"))
        _scrub_keys(ctx.out_dir, run, plan_doc)
        scores, failures = collect_scores(run, plan_doc, driver_log)
        if failures:
            raise StageFailed([Problem("eval: " + f.render()) for f in failures])

        def rel(path: str | Path | None) -> str | None:
            if path is None:
                return None
            try:
                return str(Path(path).relative_to(ctx.out_dir))
            except ValueError:
                return str(path)

        report = {
            "chain": ctx.chain.config.name,
            "run": rel(run),
            "config": rel(p["config"]),
            "predictions": rel(run / "predictions"),
            "models": plan_doc["models"],
            "datasets": plan_doc["datasets"],
            "skipped": [{"model": m, "dataset": d, "why": w} for m, d, w in plan_doc["skipped"]],
            "scores": [{**s, "predictions": rel(s["predictions"]), "results": rel(s["results"])} for s in scores],
        }
        p["report"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        chart = self._chart(ctx, p)
        _print_table(report)
        ctx.metrics.update(_metrics(report))
        meta = {"run": report["run"], "predictions": report["predictions"], "chart": rel(chart) if chart else None}
        return {"report": EvalReport(path=str(p["report"]), meta=meta)}

    def _chart(self, ctx: StageContext, p: dict[str, Path]) -> Path | None:
        """The PNG comparing models; drawn in the runtime (matplotlib lives there, not in ichain)."""
        argv = [*ctx.python(self.runtime), str(WORKERS / "eval_chart.py"), str(p["report"]), str(p["chart"])]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=str(ctx.out_dir))
        except (OSError, subprocess.SubprocessError) as exc:
            _warn(f"eval: no chart ({exc})")
            return None
        if res.returncode != 0 or not p["chart"].exists():
            _warn("eval: no chart: " + (res.stderr.strip().splitlines() or ["unknown error"])[-1])
            return None
        return p["chart"]


def _last_run_text(log: Path) -> str:
    """The driver log of the latest attempt (the log file is appended to by resumed runs)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    idx = text.rfind("Current exp folder:")
    return text[idx:] if idx >= 0 else text


def _scrub_keys(out_dir: Path, run: Path, plan_doc: dict) -> None:
    """OpenCompass resolves `{{$KEY_ENV:…}}` and then dumps the config (key included) into <run>/configs
    and prints it into logs: blank the keys in those files."""
    keys = [os.environ[m["api_key_env"]] for m in plan_doc["models"]
            if m.get("api_key_env") and len(os.environ.get(m["api_key_env"], "")) >= 4]
    if not keys:
        return
    files = [*run.glob("configs/*.py"), *run.glob("logs/**/*.out"), *out_dir.glob("logs/*.log")]
    for f in files:
        data = f.read_bytes()
        new = data
        for key in keys:
            new = new.replace(key.encode(), b"***")
        if new != data:
            f.write_bytes(new)


def _metrics(report: dict) -> dict:
    """Scores per model abbr, and per evaluated model fingerprint (so a manifest ties them to the model)."""
    by_model: dict[str, dict[str, float]] = {}
    for s in report["scores"]:
        by_model.setdefault(s["model"], {})[f"{s['dataset']}/{s['metric']}"] = s["score"]
    models = {m["abbr"]: {k: m[k] for k in ("path", "fingerprint", "source", "url") if m.get(k)}
              for m in report["models"]}
    by_fp = {m["fingerprint"]: by_model.get(m["abbr"], {}) for m in report["models"] if m.get("fingerprint")}
    # one line for the end-of-run table: each model's mean over its scores
    mean = " · ".join(f"{abbr} {sum(v.values()) / len(v):.2f}" for abbr, v in by_model.items() if v)
    return {"mean_score": mean, "scores": by_model, "models": models, "by_fingerprint": by_fp}


def _print_table(report: dict) -> None:
    from rich.console import Console

    Console(stderr=True).print(render_table(report, title=f"eval scores ({report['chain']})"))


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}")


STAGE = EvalStage()
