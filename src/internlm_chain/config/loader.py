"""Load a chain file: includes → `--set` overrides → `${ENV}` → validation → reference checks.

Every problem found on the way is collected and raised together, each naming file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from internlm_chain.config.interpolate import REFERENCE, find_references, interpolate_env
from internlm_chain.config.merge import apply_override, merge_located
from internlm_chain.config.models import ChainConfig
from internlm_chain.config.source import Located, read_yaml_file
from internlm_chain.config.validate import locate_problem, problems_from_validation
from internlm_chain.errors import ChainError, Problem
from internlm_chain.stages import STAGE_ORDER


@dataclass
class LoadedChain:
    config: ChainConfig
    doc: Located
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def workdir(self) -> Path:
        wd = Path(os.path.expanduser(self.config.workdir or f"runs/{self.config.name}"))
        return wd if wd.is_absolute() else (self.base_dir / wd).resolve()

    def problem(self, path: str, message: str, hint: str | None = None) -> Problem:
        return locate_problem(self.doc, path, message, hint)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_with_includes(path: Path, stack: tuple[Path, ...], environ: Mapping[str, str]) -> Located:
    real = path.resolve()
    if real in stack:
        chain = " → ".join(_display(p) for p in (*stack, real))
        raise ChainError(Problem(f"include cycle: {chain}", file=_display(path), path="include"))
    doc = read_yaml_file(path, _display(path))
    if not isinstance(doc.data, dict):
        raise ChainError(
            Problem(f"the top level must be a mapping, not a {type(doc.data).__name__}",
                    file=_display(path), line=1, hint="start with `name: my-chain`")
        )
    includes = doc.data.pop("include", None)
    if includes is None:
        return doc
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ChainError(locate_problem(doc, "include", "must be a file path or a list of file paths"))
    merged = Located({}, {})
    for i, inc in enumerate(includes):
        tmp = Located({"v": inc}, {("v",): doc.locate(("include", i)) or doc.locate(("include",))})
        problems = interpolate_env(tmp, environ)
        if problems:
            raise ChainError(problems)
        target = Path(os.path.expanduser(tmp.data["v"]))
        if not target.is_absolute():
            target = path.parent / target
        if not target.exists():
            where = doc.locate(("include", i)) or doc.locate(("include",))
            raise ChainError(Problem(f"included file not found: {target}", path="include",
                                     file=where.file if where else None, line=where.line if where else None))
        merged = merge_located(merged, _read_with_includes(target, (*stack, real), environ))
    return merge_located(merged, doc)


def load_document(path: Path, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Located:
    """The merged, overridden and interpolated raw document (not yet validated)."""
    environ = os.environ if environ is None else environ
    doc = _read_with_includes(Path(path), (), environ)
    for text in overrides:
        apply_override(doc, text)
    problems = interpolate_env(doc, environ)
    if problems:
        raise ChainError(problems)
    return doc


def check_references(config: ChainConfig, doc: Located) -> list[Problem]:
    from internlm_chain.config.models import StagesConfig

    problems: list[Problem] = []
    for path, expr in find_references(doc.data):
        dotted = ".".join(str(p) for p in path)
        m = REFERENCE.match(expr)
        if not m:
            problems.append(locate_problem(doc, dotted, f"'${{{expr}}}' is not a stage output reference",
                                           "write ${stages.STAGE.outputs.NAME}"))
            continue
        stage, output = m.groups()
        if stage not in STAGE_ORDER:
            problems.append(locate_problem(doc, dotted, f"'{stage}' is not a stage",
                                           "stages are " + ", ".join(STAGE_ORDER)))
            continue
        settings_cls = StagesConfig.model_fields[stage].annotation.__args__[0]
        if output not in settings_cls.OUTPUTS:
            problems.append(locate_problem(doc, dotted, f"stage '{stage}' has no output '{output}'",
                                           "its outputs are " + ", ".join(settings_cls.OUTPUTS)))
            continue
        section = getattr(config.stages, stage)
        if section is None or not section.enabled:
            problems.append(locate_problem(doc, dotted, f"refers to stage '{stage}', which is not enabled",
                                           f"add stages.{stage} or point this at an existing path"))
        if len(path) >= 2 and path[0] == "stages" and path[1] in STAGE_ORDER:
            if STAGE_ORDER.index(stage) >= STAGE_ORDER.index(path[1]):
                problems.append(locate_problem(doc, dotted, f"stage '{path[1]}' cannot use an output of "
                                               f"'{stage}', which runs after it",
                                               "stages run in the order " + " → ".join(STAGE_ORDER)))
    return problems


def load_chain(path: str | Path, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> LoadedChain:
    """Load and validate a chain file; raise `ChainError` with every problem found."""
    path = Path(path)
    return chain_from_document(load_document(path, overrides, environ), path.resolve())


def chain_from_document(doc: Located, path: Path) -> LoadedChain:
    """Validate a raw document (from a file, or built from CLI flags) into a chain "read from" `path`."""
    try:
        config = ChainConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise ChainError(problems_from_validation(exc, ChainConfig, doc)) from None
    problems = check_references(config, doc)
    if problems:
        raise ChainError(problems)
    return LoadedChain(config=config, doc=doc, path=path)
