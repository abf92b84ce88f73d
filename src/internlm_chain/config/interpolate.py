"""`${ENV}` / `${ENV:-default}` interpolation; `${stages.X.outputs.Y}` is left for the chain."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from internlm_chain.config.source import Located, Path_
from internlm_chain.errors import Problem

# `$${` is a literal `${`; `${...}` is a placeholder.
PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REFERENCE = re.compile(r"^stages\.([a-z_]+)\.outputs\.([A-Za-z0-9_]+)$")


def is_reference(expr: str) -> bool:
    return expr.startswith("stages.")


def find_references(value: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    """Every `${stages...}` placeholder inside `value`, with the path of the string holding it."""
    found: list[tuple[Path_, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += find_references(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += find_references(v, (*path, i))
    elif isinstance(value, str):
        for m in PLACEHOLDER.finditer(value):
            if m.group(1) is not None and is_reference(m.group(1).strip()):
                found.append((path, m.group(1).strip()))
    return found


def _interpolate_string(text: str, environ: Mapping[str, str], fail) -> str:
    def replace(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "$${"  # kept until the final unescape, so references stay untouched
        expr = m.group(1).strip()
        if is_reference(expr):
            return m.group(0)
        name, sep, default = expr.partition(":-")
        if not ENV_NAME.match(name):
            fail(f"'${{{expr}}}' is not a valid placeholder", "write ${NAME}, ${NAME:-default} or ${stages.S.outputs.O}")
            return m.group(0)
        if name in environ and (environ[name] != "" or not sep):
            return environ[name]
        if sep:
            return default
        fail(f"environment variable {name} is not set", f"export {name}=... or write ${{{name}:-default}}")
        return m.group(0)

    return PLACEHOLDER.sub(replace, text)


def interpolate_env(doc: Located, environ: Mapping[str, str]) -> list[Problem]:
    """Replace environment placeholders in place; return one problem per unresolved one."""
    problems: list[Problem] = []

    def walk(value: Any, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:

            def fail(msg: str, hint: str) -> None:
                loc = doc.locate(path)
                problems.append(
                    Problem(msg, path=_dotted(path), file=loc.file if loc else None,
                            line=loc.line if loc else None, hint=hint)
                )

            return _interpolate_string(value, environ, fail).replace("$${", "${")
        return value

    doc.data = walk(doc.data, ())
    return problems


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)
