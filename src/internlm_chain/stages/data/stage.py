"""The data stage: one Job runs the pipeline (`python -m datapipe`) inside the `data` runtime."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from internlm_chain.chain.artifacts import (
    Artifact,
    CleanCorpus,
    DataReport,
    PretrainText,
    SFTData,
    TokenizedCorpus,
    Tokenizer,
)
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.stages.base import JobResult, Stage, StageContext

WORKERS_DIR = Path(__file__).resolve().parents[2] / "workers"


def _spec():
    # stdlib-only catalogue shared with the worker: one source of truth for steps and parameters
    from internlm_chain.workers.datapipe import spec

    return spec


class DataStage(Stage):
    name = "data"
    runtime = "data"

    # ---- helpers ---------------------------------------------------------------------------------
    def _inputs(self, ctx: StageContext) -> list[str]:
        base = ctx.chain.base_dir
        out = []
        for item in ctx.settings.inputs:
            p = Path(os.path.expanduser(item))
            out.append(str(p if p.is_absolute() else (base / p).resolve()))
        if ctx.settings.demo_corpus:
            out.append(str(self._demo_dir(ctx)))
        return out

    def _demo_dir(self, ctx: StageContext) -> Path:
        return ctx.out_dir / "demo-corpus"

    def _tokenizer(self, ctx: StageContext) -> str | None:
        s = ctx.settings
        if "internevo" not in s.outputs:
            return None
        tok = s.tokenizer or ctx.chain.config.model.tokenizer or ctx.chain.config.model.path or "train"
        if tok == "train":
            return tok
        p = Path(os.path.expanduser(tok))
        return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve())

    def _steps(self, ctx: StageContext) -> list[dict]:
        steps = ctx.settings.steps
        raw = None if steps is None else [{"name": s.name, "params": s.params} for s in steps]
        return _spec().resolve_steps(raw)

    # ---- contract ----------------------------------------------------------------------------------
    def validate(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        spec = _spec()
        problems: list[Problem] = []
        if not s.inputs and not s.demo_corpus:
            problems.append(ctx.problem("inputs", "no inputs given",
                                        "list files or directories to process, or set demo_corpus: 200"))
        for i, path in enumerate(self._inputs(ctx)[: len(s.inputs)]):
            if not os.path.exists(path):
                problems.append(ctx.problem(f"inputs.{i}", f"input not found: {path}"))
        for i, step in enumerate(s.steps or []):
            for field_, msg in spec.check_step(step.name, step.params):
                problems.append(ctx.problem(f"steps.{i}.{field_}", msg))
        if problems:
            return problems
        for i, step in enumerate(self._steps(ctx)):
            p = step["params"]
            for key in ("model", "classifier", "words_file", "domains_file"):
                if p.get(key) and not os.path.exists(os.path.expanduser(str(p[key]))):
                    problems.append(ctx.problem(f"steps.{i}.params.{key}", f"file not found: {p[key]}"))
            if step["name"] == "classifier" and not p.get("model"):
                problems.append(ctx.problem(f"steps.{i}.params.model", "the classifier step needs a model",
                                            "a fastText-format model file (.bin/.ftz)"))
            if step["name"] == "dedup_near":
                k, b = p["num_perm"], p["bands"]
                if k < 8 or k & (k - 1) or b < 1 or k % b:
                    problems.append(ctx.problem(f"steps.{i}.params", f"num_perm {k} must be a power of two "
                                                f">= 8 and divisible by bands {b}"))
        problems += self._check_ray(ctx)
        names = [st["name"] for st in self._steps(ctx)]
        if len(set(names)) != len(names):
            problems.append(ctx.problem("steps", "a step is listed twice: " + ", ".join(names)))
        tok = self._tokenizer(ctx)
        if tok and tok != "train" and not os.path.exists(os.path.join(tok, "tokenizer.json")):
            problems.append(ctx.problem("tokenizer", f"no tokenizer.json in {tok}",
                                        "give a Hugging Face tokenizer directory, or 'train'"))
        return problems

    def _check_ray(self, ctx: StageContext) -> list[Problem]:
        s, r = ctx.settings, ctx.settings.ray
        if s.executor != "ray":
            if "ray" in s.model_fields_set:
                return [ctx.problem("ray", f"ray settings apply only with executor: ray (executor is {s.executor})",
                                    "set executor: ray, or remove the ray section")]
            return []
        problems = []
        addr = r.address
        if addr.startswith("ray://"):
            problems.append(ctx.problem(
                "ray.address", f"{addr}: Ray Client (ray://) is not supported: the driver reads the tasks' "
                "completion files, so it must run on a machine sharing the cluster's filesystem",
                "run ichain on a cluster node with address: auto, or host:port of the head's GCS (e.g. 10.0.0.5:6379)"))
        elif addr not in ("local", "auto"):
            m = re.fullmatch(r"(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})", addr)
            if not m or not 0 < int(m[2]) < 65536:
                problems.append(ctx.problem("ray.address", f"'{addr}' is not local, auto or host:port",
                                            "e.g. local, auto, or 10.0.0.5:6379 (the head node's GCS address)"))
        if addr != "local":
            if "local_cpus" in r.model_fields_set:
                problems.append(ctx.problem("ray.local_cpus", "local_cpus applies only to address: local",
                                            "the cluster's nodes decide their CPUs; remove it"))
            return problems
        host = os.cpu_count() or 1
        cpus = r.local_cpus or s.workers or host
        if r.local_cpus > host:
            problems.append(ctx.problem("ray.local_cpus", f"{r.local_cpus} CPUs asked, this machine has {host}",
                                        f"at most {host} (0 = workers, else every core)"))
        elif r.cpus_per_task > cpus:
            problems.append(ctx.problem("ray.cpus_per_task", f"a task needs {r.cpus_per_task} CPUs but the local "
                                        f"Ray instance has {cpus}: no task could ever start",
                                        f"cpus_per_task <= {cpus}, or raise ray.local_cpus / workers"))
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
        if r.memory_per_task_gb > total:
            problems.append(ctx.problem("ray.memory_per_task_gb", f"a task reserves {r.memory_per_task_gb:g} GiB but "
                                        f"this machine has {total:.1f} GiB: no task could ever start",
                                        f"at most {int(total)}"))
        return problems

    def run_config(self, ctx: StageContext) -> dict:
        s = ctx.settings
        launcher = s.launcher or ctx.chain.config.launcher
        slurm = launcher.slurm
        return {
            "out_dir": str(ctx.out_dir), "inputs": self._inputs(ctx), "languages": s.languages,
            "text_key": s.text_key, "workers": s.workers, "executor": s.executor, "steps": self._steps(ctx),
            "outputs": s.outputs, "tokenizer": self._tokenizer(ctx), "tokenizer_vocab_size": s.tokenizer_vocab_size,
            "internevo_max_bytes": s.internevo_max_bytes,
            "slurm": {"partition": slurm.partition, "qos": slurm.qos, "time": slurm.time,
                      "cpus_per_task": slurm.cpus_per_task} if s.executor == "slurm" else {},
        } | ({"ray": {**s.ray.model_dump(), "workers": s.workers}} if s.executor == "ray" else {})

    def plan(self, ctx: StageContext) -> list[Job]:
        config_path = ctx.out_dir / "pipeline.json"
        text = json.dumps(self.run_config(ctx), indent=2, ensure_ascii=False) + "\n"
        # only the worker directory is importable: no dev or ichain packages leak into the runtime
        env = {"PYTHONPATH": str(WORKERS_DIR), "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
        demo = []
        if ctx.settings.demo_corpus:
            demo = [Job(
                stage=self.name, name="demo-corpus", runtime=self.runtime, cwd=str(ctx.out_dir), env=env,
                argv=[*ctx.python(self.runtime), "-m", "datapipe", "demo", str(self._demo_dir(ctx)),
                      "--docs", str(ctx.settings.demo_corpus)],
                description="write the built-in zh+en demo corpus",
            )]
        return [*demo, Job(
            stage=self.name, name="pipeline", runtime=self.runtime, cwd=str(ctx.out_dir),
            argv=[*ctx.python(self.runtime), "-m", "datapipe", "run", "--config", str(config_path)],
            env=env,
            files={str(config_path): text},
            resources=Resources(cpus_per_task=ctx.settings.workers or None),
            expected_outputs=[str(ctx.out_dir / "clean"), str(ctx.out_dir / "report.json")],
            description="clean, filter, de-duplicate and tokenize the corpus",
        )]

    def _artifacts(self, ctx: StageContext, root: Path, sft: bool) -> dict[str, Artifact]:
        s = ctx.settings
        template = ctx.chain.config.model.chat_template
        arts: dict[str, Artifact] = {"clean": CleanCorpus(path=str(root / "clean")),
                                     "report": DataReport(path=str(root / "report.html"))}
        if "internevo" in s.outputs:
            arts["internevo"] = TokenizedCorpus(path=str(root / "internevo"))
            arts["tokenizer"] = Tokenizer(path=str(root / "tokenizer"), chat_template=template)
        if "xtuner" in s.outputs:
            arts["xtuner"] = PretrainText(path=str(root / "xtuner" / "pretrain.jsonl"))
            if sft:
                arts["sft"] = SFTData(path=str(root / "xtuner" / "sft.jsonl"), chat_template=template)
        return arts

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        return self._artifacts(ctx, final_dir, sft=True)

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        out = ctx.out_dir
        log = results[-1].log if results else None
        report_path = out / "report.json"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StageFailed(Problem(f"data: no readable report.json ({exc})", hint=f"log: {log}")) from None
        if not (out / "clean").is_dir():
            raise StageFailed(Problem("data: clean/ is missing", hint=f"log: {log}"))
        arts = self._artifacts(ctx, out, sft=(out / "xtuner" / "sft.jsonl").exists())
        if "internevo" in arts and not any((out / "internevo").glob("*/*.bin")) and report["docs_kept"]:
            raise StageFailed(Problem("data: no InternEvo .bin files were written", hint=f"log: {log}"))
        for art in arts.values():
            art.meta.update({"docs": report["docs_kept"]})
        ctx.metrics.update({"docs_kept": report["docs_kept"], "docs_in": report["docs_in"],
                            "malformed": report["malformed"], "review": report["review"],
                            **{f"dropped_{k}": v for k, v in report["dropped_per_step"].items()}})
        return arts


STAGE = DataStage()
