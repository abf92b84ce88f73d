"""Turn pydantic's errors into located, actionable problems."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from internlm_chain.config.source import Located
from internlm_chain.errors import Problem


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind Optional/Union/Annotated."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            if arg is not type(None):
                out += _unwrap(arg)
        return out
    return [tp]


def _step(tp: Any, part: Any) -> list[Any]:
    out: list[Any] = []
    for t in _unwrap(tp):
        origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            for name, f in t.model_fields.items():
                if part in (name, f.alias):
                    out.append(f.annotation)
        elif origin in (dict, typing.Dict) and typing.get_args(t):  # noqa: UP006
            out.append(typing.get_args(t)[1])
        elif origin in (list, tuple, typing.List) and typing.get_args(t):  # noqa: UP006
            out.append(typing.get_args(t)[0])
    return out


def allowed_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """Field names accepted at `path` inside `model` (empty when unknown)."""
    current: list[Any] = [model]
    for part in path:
        nxt: list[Any] = []
        for tp in current:
            nxt += _step(tp, part)
        if not nxt:
            return []
        current = nxt
    names: list[str] = []
    for tp in current:
        for t in _unwrap(tp):
            if isinstance(t, type) and issubclass(t, BaseModel):
                names += [f.alias or n for n, f in t.model_fields.items()]
    return sorted(set(names))


def _clean_loc(loc: tuple) -> tuple:
    # pydantic inserts validator names such as 'function-after[...]' into union locations
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def problems_from_validation(exc: ValidationError, model: type[BaseModel], doc: Located) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        where = doc.locate(loc)
        kind = err["type"]
        hint = None
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            allowed = allowed_keys(model, loc[:-1])
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            message = f"unknown key '{key}'"
            if close:
                hint = f"did you mean '{close[0]}'?"
            elif allowed:
                hint = "allowed keys: " + ", ".join(allowed)
        elif kind == "missing":
            message = "required field is missing"
            hint = "add it"
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            got = err.get("input")
            if not isinstance(got, (dict, list)) and got is not None:
                message += f" (got {got!r})"
            ctx = err.get("ctx") or {}
            if "expected" in ctx:
                hint = f"expected {ctx['expected']}"
        problems.append(
            Problem(message, path=dotted, file=where.file if where else None,
                    line=where.line if where else None, hint=hint)
        )
    return _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def locate_problem(doc: Located, path: str, message: str, hint: str | None = None) -> Problem:
    """A problem at a dotted field path, located in the chain file."""
    parts = tuple(int(p) if p.isdigit() else p for p in path.split(".")) if path else ()
    where = doc.locate(parts)
    return Problem(message, path=path, file=where.file if where else None,
                   line=where.line if where else None, hint=hint)
