"""Training-data rows as XTuner's map functions will read them: which files, how many rows, and the first
row that lacks a field (file, line, field). Stdlib only: the stage imports it before any job starts, and
the dataset-check worker imports it inside the runtime to explain a failed XTuner check."""

from __future__ import annotations

import json
from pathlib import Path

DATA_SUFFIXES = (".jsonl", ".json")
ROLES = ("system", "user", "assistant")
ROWS_CHECKED = 100


def data_files(path: Path) -> list[Path]:
    """A file, or the .jsonl/.json files of a folder (sorted, not recursive)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
    return [path]


def _rows(path: Path, limit: int | None):
    """(line number, parsed row or the JSON error) for the first `limit` rows of a .jsonl/.json file."""
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield exc.lineno, exc
            return
        if not isinstance(data, list):
            yield 1, ValueError("a .json data file must hold a list of rows")
            return
        for i, row in enumerate(data if limit is None else data[:limit]):
            yield i + 1, row  # "line" = row number for a JSON array
        return
    with open(path, encoding="utf-8") as fh:
        seen = 0
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, exc
            seen += 1
            if limit is not None and seen >= limit:
                return


def count_rows(files: list[Path]) -> int:
    total = 0
    for f in files:
        if f.suffix == ".json":
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            total += len(data) if isinstance(data, list) else 0
        else:
            with open(f, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
    return total


def _messages_problem(messages: object, field: str, roles: tuple[str, ...]) -> tuple[str, str] | None:
    if not isinstance(messages, list) or not messages:
        return field, 'must be a non-empty list of {"role", "content"} messages'
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in roles:
            got = msg.get("role") if isinstance(msg, dict) else None
            return f"{field}[{i}].role", "role must be " + " or ".join(roles) + (f", not {got!r}" if got else "")
        if not isinstance(msg.get("content"), str):
            return f"{field}[{i}].content", "content must be a string"
    return None


def _preference_problem(row: dict) -> tuple[str, str] | None:
    """XTuner's build_preference_dataset renders prompt, prompt+chosen and prompt+rejected with the
    tokenizer's chat template and learns from what follows the prompt: so the prompt is a conversation
    that ends with a user turn, and both replies are assistant turns that differ."""
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            return key, 'preference rows need "prompt", "chosen" and "rejected" (lists of messages); ' \
                        f'"{key}" is missing'
    bad = _messages_problem(row["prompt"], "prompt", ROLES)
    if bad:
        return bad
    if row["prompt"][-1]["role"] != "user":
        return f"prompt[{len(row['prompt']) - 1}].role", "the prompt must end with a user message"
    for key in ("chosen", "rejected"):
        bad = _messages_problem(row[key], key, ("assistant",))
        if bad:
            return bad
    if row["chosen"] == row["rejected"]:
        return "rejected", "is the same as chosen: the pair teaches nothing"
    return None


def _row_problem(row: object, kind: str) -> tuple[str, str] | None:
    """(field, what is wrong) for one row of the given kind (openai | alpaca | text | preference), or None."""
    if not isinstance(row, dict):
        return "", f"each row must be a JSON object, not {type(row).__name__}"
    if kind == "preference":
        return _preference_problem(row)
    if kind == "text":
        if not isinstance(row.get("text"), str):
            return "text", 'continued pre-training rows need a string field "text"'
        return None
    if kind == "alpaca":
        for key in ("instruction", "input", "output"):
            if not isinstance(row.get(key), str):
                return key, f'alpaca rows need string fields "instruction", "input" and "output" ("{key}" is ' \
                            + ("missing)" if key not in row else f"a {type(row[key]).__name__})")
        return None
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", 'OpenAI-format rows need "messages": a list of {"role", "content"} objects'
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            return f"messages[{i}].role", "role must be one of " + ", ".join(ROLES)
        if not isinstance(msg.get("content"), str):
            return f"messages[{i}].content", "content must be a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "messages", "no assistant message: nothing to learn from this row"
    return None


def first_problem(files: list[Path], kind: str, limit: int | None = ROWS_CHECKED) -> str | None:
    """'FILE:LINE: field F: message' for the first bad row among the first `limit` rows of each file."""
    for f in files:
        for lineno, row in _rows(f, limit):
            if isinstance(row, Exception):
                return f"{f}:{lineno}: not valid JSON ({row})"
            bad = _row_problem(row, kind)
            if bad:
                where = f"field '{bad[0]}': " if bad[0] else ""
                return f"{f}:{lineno}: {where}{bad[1]}"
    return None


def row_kind(mode: str, data_format: str) -> str:
    if mode in ("dpo", "orpo", "reward"):
        return "preference"
    return "text" if mode == "continue" else data_format
