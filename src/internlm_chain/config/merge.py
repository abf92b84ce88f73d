"""Deep merge of located documents (later wins) and `--set` overrides."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from internlm_chain.config.source import Located, Location, Path_
from internlm_chain.errors import ChainError, Problem


def merge_located(base: Located, top: Located) -> Located:
    """Merge `top` over `base`: mappings merge key by key, anything else is replaced."""
    locations = dict(base.locations)

    def merge(a: Any, b: Any, path: Path_) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                out[key] = merge(a[key], value, (*path, key)) if key in a else value
                if key not in a:
                    _copy_locations(top, locations, (*path, key))
            if path in top.locations:
                locations[path] = top.locations[path]
            return out
        _drop_locations(locations, path)
        _copy_locations(top, locations, path)
        return copy.deepcopy(b)

    data = merge(base.data, top.data, ())
    return Located(data, locations)


def _drop_locations(locations: dict[Path_, Location], prefix: Path_) -> None:
    n = len(prefix)
    for key in [k for k in locations if k[:n] == prefix]:
        del locations[key]


def _copy_locations(src: Located, dst: dict[Path_, Location], prefix: Path_) -> None:
    n = len(prefix)
    for key, loc in src.locations.items():
        if key[:n] == prefix:
            dst[key] = loc


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (["a","b","c"], typed value). Values are read as YAML scalars/flow lists."""
    if "=" not in text:
        raise ChainError(
            Problem(f"override '{text}' has no '='", file="--set", hint="write --set a.b.c=value")
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ChainError(
            Problem(f"override '{text}' has an empty key part", file="--set", hint="write --set a.b.c=value")
        )
    return parts, _parse_value(raw)


def _parse_value(raw: str) -> Any:
    if raw.strip() == "":
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # A bare `a: b` would come back as a mapping; users mean the literal text then.
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        return raw
    return value


class FlagOverride(str):
    """An override that a CLI flag stands for (`--port 1` is `stages.deploy.port=1`): problems with its
    value name the flag the user typed, not a `--set` they never wrote."""

    flag: str

    def __new__(cls, text: str, flag: str) -> FlagOverride:
        obj = super().__new__(cls, text)
        obj.flag = flag
        return obj


def apply_override(doc: Located, text: str) -> None:
    parts, value = parse_override(text)
    loc = Location(text.flag if isinstance(text, FlagOverride) else "--set " + text)
    node: Any = doc.data
    path: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ChainError(
                    Problem(
                        f"'{part}' is not an index of this list of {len(node)} items",
                        path=where,
                        file=loc.file,
                    )
                )
            key: str | int = int(part) % len(node)
        elif isinstance(node, dict):
            key = part
        else:
            raise ChainError(
                Problem(
                    f"cannot set a field inside a {type(node).__name__}",
                    path=".".join(parts[:i]),
                    file=loc.file,
                    hint=f"{'.'.join(parts[:i])} holds a plain value, not a mapping",
                )
            )
        path.append(key)
        if last:
            node[key] = value
            _drop_locations(doc.locations, tuple(path))
            doc.locations[tuple(path)] = loc
        else:
            if isinstance(node, dict) and (key not in node or node[key] is None):
                node[key] = {}
                doc.locations[tuple(path)] = loc
            node = node[key]
