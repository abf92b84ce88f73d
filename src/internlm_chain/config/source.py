"""Read YAML while remembering where every value came from (file and line).

The located map lets a validation error deep inside a pydantic model point back at the exact
line the user has to change, even after includes and `--set` overrides have been merged in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from internlm_chain.errors import ChainError, Problem

Path_ = tuple[str | int, ...]


@dataclass
class Location:
    file: str
    line: int | None = None


@dataclass
class Located:
    """Plain data plus, for each path into it, where that value was written."""

    data: Any
    locations: dict[Path_, Location] = field(default_factory=dict)

    def locate(self, path: Path_) -> Location | None:
        """The location of `path`, or of its nearest located ancestor."""
        path = tuple(path)
        while True:
            if path in self.locations:
                return self.locations[path]
            if not path:
                return None
            path = path[:-1]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (YAML silently keeps the last)."""


def _record(node: yaml.Node, value: Any, path: Path_, file: str, out: dict[Path_, Location]) -> None:
    out[path] = Location(file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ChainError(
                    Problem(
                        f"key '{key}' is written twice in one mapping (first on line {seen[key]})",
                        path=".".join(map(str, (*path, key))),
                        file=file,
                        line=line,
                        hint="keep one of them",
                    )
                )
            seen[key] = line
            if key in value:
                _record(value_node, value[key], (*path, key), file, out)
                out[(*path, key)] = Location(file, line)
    elif isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        for i, item_node in enumerate(node.value):
            if i < len(value):
                _record(item_node, value[i], (*path, i), file, out)


def parse_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; empty documents become `{}`."""
    loader = None
    try:
        loader = _UniqueKeyLoader(text)  # the reader already rejects non-printable characters here
        node = loader.get_single_node()
        if node is None:
            return Located({}, {(): Location(file, 1)})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = exc.problem or str(exc)
        raise ChainError(Problem(f"invalid YAML: {msg}", file=file, line=line)) from None
    except yaml.YAMLError as exc:
        raise ChainError(Problem(f"invalid YAML: {exc}", file=file)) from None
    finally:
        if loader is not None:
            loader.dispose()
    locations: dict[Path_, Location] = {}
    _record(node, data, (), file, locations)
    return Located(data, locations)


def read_yaml_file(path: Path, shown_as: str | None = None) -> Located:
    shown = shown_as or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ChainError(Problem("file not found", file=shown)) from None
    except IsADirectoryError:
        raise ChainError(Problem("is a directory, expected a YAML file", file=shown)) from None
    except OSError as exc:
        raise ChainError(Problem(f"cannot read: {exc.strerror}", file=shown)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChainError(
            Problem(f"not UTF-8 text (byte {exc.start})", file=shown, hint="save the file as UTF-8")
        ) from None
    return parse_yaml(text, shown)
