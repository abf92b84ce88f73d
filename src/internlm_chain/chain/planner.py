"""From a loaded chain to per-stage contexts and Jobs, without side effects (dry-run is this path)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from internlm_chain import __version__
from internlm_chain.chain.artifacts import Artifact
from internlm_chain.chain.fingerprint import settings_paths, stage_fingerprint
from internlm_chain.chain.job import Job
from internlm_chain.config.interpolate import PLACEHOLDER, REFERENCE, is_reference
from internlm_chain.config.loader import LoadedChain
from internlm_chain.config.validate import problems_from_validation
from internlm_chain.errors import ChainError, Problem
from internlm_chain.runtimes.machine import detect_device
from internlm_chain.stages import STAGE_ORDER
from internlm_chain.stages.base import Stage, StageContext
from internlm_chain.stages.registry import get_stage, load_plugin


class MissingReference(Problem):
    """A `${stages.S.outputs.O}` the planner could not resolve. Stage S's own validation may already name
    the cause at the same field (e.g. finetune with merge: false has no `model`); then this one is noise."""


class Planner:
    """Builds each stage's context: resolved settings, inputs from earlier stages, staging directory."""

    def __init__(self, loaded: LoadedChain, artifacts: dict[str, Artifact] | None = None):
        self.loaded = loaded
        self.config = loaded.config
        self.device = self.config.device if self.config.device != "auto" else detect_device()
        # "stage.output" → artifact; real ones from the manifest, predicted ones while dry-running
        self.artifacts: dict[str, Artifact] = dict(artifacts or {})
        self._impls: dict[str, Stage] = {}

    def impl(self, stage: str) -> Stage:
        """The stage's implementation: its `plugin:` when the section names one, else the built-in."""
        if stage not in self._impls:
            section = getattr(self.config.stages, stage, None)
            spec = getattr(section, "plugin", None)
            if spec:
                try:
                    self._impls[stage] = load_plugin(spec, self.loaded.base_dir)
                except ChainError as exc:
                    raise ChainError(self.loaded.problem(f"stages.{stage}.plugin", exc.problems[0].message,
                                                         "e.g. mypkg.stages:MyStage or stages.py:STAGE")) from None
            else:
                self._impls[stage] = get_stage(stage)
        return self._impls[stage]

    @property
    def workdir(self) -> Path:
        return self.loaded.workdir

    def stage_dir(self, stage: str) -> Path:
        return self.workdir / stage

    def staging_dir(self, stage: str) -> Path:
        return self.workdir / ".staging" / stage

    def dependencies(self, stage: str) -> list[str]:
        """Earlier enabled stages whose outputs this stage consumes (declared or referenced)."""
        impl = self.impl(stage)
        enabled = set(self.config.enabled_stages())
        deps = {s for s in getattr(impl, "needs", ()) if s in enabled}
        raw = self.loaded.doc.data.get("stages", {}).get(stage) or {}
        for m in PLACEHOLDER.finditer(str(raw)):
            if m.group(1) and (r := REFERENCE.match(m.group(1).strip())):
                deps.add(r.group(1))
        return [s for s in STAGE_ORDER if s in deps]

    def _resolve_references(self, value, stage: str, problems: list[Problem], path: str):
        if isinstance(value, dict):
            return {k: self._resolve_references(v, stage, problems, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve_references(v, stage, problems, f"{path}.{i}") for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def sub(m):
            expr = (m.group(1) or "").strip()
            if not is_reference(expr):
                return m.group(0)
            src, out = REFERENCE.match(expr).groups()
            art = self.artifacts.get(f"{src}.{out}")
            if art is None:
                known = sorted(k.split(".", 1)[1] for k in self.artifacts if k.split(".", 1)[0] == src)
                if known:  # the stage is planned (or ran) and has other outputs: running it will not help
                    found = self.loaded.problem(path, f"`{src}` has no output `{out}`", "its outputs are "
                                                + ", ".join(known))
                else:
                    found = self.loaded.problem(path, f"needs `{src}.outputs.{out}`, which does not exist yet",
                                                f"run `ichain run {self.loaded.path.name} --only {src}` first")
                problems.append(MissingReference(**vars(found)))
                return m.group(0)
            return art.path

        return PLACEHOLDER.sub(sub, value)

    def context(self, stage: str, out_dir: Path | None = None) -> StageContext:
        """The stage's context with `${stages…}` references replaced by artifact paths."""
        raw = (self.loaded.doc.data.get("stages") or {}).get(stage) or {}
        problems: list[Problem] = []
        resolved = self._resolve_references(raw, stage, problems, f"stages.{stage}")
        if problems:
            raise ChainError(problems)
        settings_cls = type(getattr(self.config.stages, stage))
        try:
            settings = settings_cls.model_validate(resolved)
        except ValidationError as exc:  # a reference resolved to something the field rejects
            raise ChainError(problems_from_validation(exc, settings_cls, self.loaded.doc)) from None
        ctx = StageContext(chain=self.loaded, stage=stage, device=self.device,
                           out_dir=out_dir or self.staging_dir(stage),
                           inputs={k: v for k, v in self.artifacts.items()
                                   if k.split(".")[0] in self.dependencies(stage)})
        ctx.resolved_settings = settings
        return ctx

    def validate_stage(self, stage: str) -> list[Problem]:
        """The stage's own checks, seeing earlier stages' outputs as they will be (the dry-run's view).

        Call in stage order: the stage's predicted outputs are added for the stages after it, so a whole
        chain validates before any of it has run.
        """
        impl = self.impl(stage)
        try:
            ctx = self.context(stage)
        except ChainError as exc:
            return exc.problems
        problems = impl.validate(ctx)
        for key, art in self.predicted_outputs(ctx).items():
            self.artifacts.setdefault(key, art)
        return problems

    def plan(self, stage: str) -> tuple[StageContext, list[Job]]:
        impl = self.impl(stage)
        ctx = self.context(stage)
        problems = impl.validate(ctx)
        if problems:
            raise ChainError(problems)
        return ctx, impl.plan(ctx)

    def predicted_outputs(self, ctx: StageContext) -> dict[str, Artifact]:
        impl = self.impl(ctx.stage)
        predict = getattr(impl, "predict_outputs", None)
        outputs = predict(ctx, self.stage_dir(ctx.stage)) if predict else {}
        return {f"{ctx.stage}.{k}": v for k, v in outputs.items()}

    def fingerprint(self, ctx: StageContext) -> str:
        from internlm_chain.runtimes.resolve import lock_hash

        impl = self.impl(ctx.stage)
        settings = ctx.resolved_settings.model_dump(mode="json", exclude={"enabled", "launcher"})
        chain_level = {"device": self.device, "model": self.config.model.model_dump(mode="json")}
        inputs = {k: a.fingerprint or a.path for k, a in sorted(ctx.inputs.items())}
        stage_settings = {k: v for k, v in settings.items() if k != "runtime"}
        files = settings_paths([stage_settings, chain_level["model"]], self.loaded.base_dir, self.workdir)
        inputs.update({f"file:{path}": sig for path, sig in sorted(files.items())})
        lock = lock_hash(self.loaded, ctx.stage, impl.runtime, self.device) if impl.runtime else ""
        return stage_fingerprint(ctx.stage, {"stage": settings, "chain": chain_level}, inputs, lock, __version__)
