"""Input shards → records. A shard is one input file (or one folder of .txt/.html files).

Every record is a dict {id, text | html | messages, meta}. Bad input never stops a run: it becomes a
("malformed", {file, line, error}) item that is quarantined and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterator

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - the runtime has orjson; the fallback keeps tests light
    import json

    _loads = json.loads

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz")
HTML_SUFFIXES = (".html", ".htm")
TEXT_SUFFIXES = (".txt",)


def file_kind(path: str) -> str | None:
    low = path.lower()
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("warc", WARC_SUFFIXES),
                           ("html", HTML_SUFFIXES), ("txt", TEXT_SUFFIXES)):
        if low.endswith(suffixes):
            return kind
    return None


def list_shards(inputs: list[str]) -> list[dict]:
    """Deterministic shard list. .txt/.html files are grouped per folder; other files are one shard each."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        else:
            files.append(item)
    shards: list[dict] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for path in files:
        kind = file_kind(path)
        if kind is None:
            shards.append({"kind": "unknown", "paths": [path]})
        elif kind in ("txt", "html"):
            groups.setdefault((os.path.dirname(path), kind), []).append(path)
        else:
            shards.append({"kind": kind, "paths": [path]})
    for (_, kind), paths in groups.items():
        shards.append({"kind": kind + "dir", "paths": sorted(paths)})
    shards.sort(key=lambda s: (s["paths"][0], s["kind"]))
    for i, shard in enumerate(shards):
        stem = os.path.basename(shard["paths"][0]).split(".")[0][:40] or "shard"
        shard["id"] = f"{i:05d}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in stem)}"
    return shards


def stable_id(path: str, line: int) -> str:
    digest = hashlib.blake2b(os.path.abspath(path).encode(), digest_size=5).hexdigest()
    return f"{digest}-{line}"


def _open_binary(path: str):
    low = path.lower()
    if low.endswith(".gz"):
        return gzip.open(path, "rb")
    if low.endswith(".zst"):
        import zstandard

        fh = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True))
    return open(path, "rb")


def _record_from_obj(obj, path: str, line: int, text_key: str):
    """(record, None) or (None, error)."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    rid = obj.get("id")
    rec = {"id": str(rid) if rid is not None else stable_id(path, line)}
    meta = {k: v for k, v in obj.items() if k not in ("id", text_key, "messages", "conversation", "meta")}
    if isinstance(obj.get("meta"), dict):
        meta.update(obj["meta"])
    meta["source"] = path
    meta["line"] = line
    text = obj.get(text_key)
    messages = _messages(obj)
    if isinstance(text, str):
        rec["text"] = text
    elif messages is not None:
        rec["messages"] = messages
        rec["text"] = "\n".join(m["content"] for m in messages)
    elif text is None:
        return None, f"missing text key '{text_key}'"
    else:
        return None, f"'{text_key}' is a {type(text).__name__}, not a string"
    if isinstance(obj.get("html"), str) and "text" not in rec:
        rec["html"] = obj["html"]
    rec["meta"] = meta
    return rec, None


def _messages(obj) -> list[dict] | None:
    """OpenAI `messages`, or XTuner's `conversation` [{system?, input, output}], as OpenAI messages."""
    msgs = obj.get("messages")
    if isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
            for m in msgs):
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    conv = obj.get("conversation")
    if isinstance(conv, list) and conv and all(isinstance(t, dict) for t in conv):
        out = []
        for turn in conv:
            if isinstance(turn.get("system"), str) and turn["system"]:
                out.append({"role": "system", "content": turn["system"]})
            if isinstance(turn.get("input"), str):
                out.append({"role": "user", "content": turn["input"]})
            if isinstance(turn.get("output"), str):
                out.append({"role": "assistant", "content": turn["output"]})
        return out or None
    return None


def _bad(path: str, line: int | None, error: str) -> tuple[str, dict]:
    return "malformed", {"file": path, "line": line, "error": error}


def read_jsonl(path: str, text_key: str) -> Iterator[tuple[str, dict]]:
    try:
        fh = _open_binary(path)
    except OSError as exc:
        yield _bad(path, None, f"cannot open: {exc}")
        return
    n = 0
    try:
        with fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    obj = _loads(raw)
                except ValueError as exc:
                    # the UTF-8 check only for lines that failed: the parser rejects bad UTF-8 too
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as bad:
                        yield _bad(path, n, f"non-UTF-8 bytes at column {bad.start + 1}")
                        continue
                    yield _bad(path, n, f"malformed JSON: {str(exc)[:120]}")
                    continue
                rec, err = _record_from_obj(obj, path, n, text_key)
                yield ("doc", rec) if rec is not None else _bad(path, n, err)
    except (OSError, EOFError, ValueError) as exc:  # truncated gzip/zstd streams
        yield _bad(path, n + 1, f"unreadable archive: {exc}")
        return
    if n == 0:
        yield _bad(path, None, "empty file")


def read_parquet(path: str, text_key: str) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        row = 0
        for batch in pf.iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                row += 1
                rec, err = _record_from_obj(obj, path, row, text_key)
                yield ("doc", rec) if rec is not None else _bad(path, row, err)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        yield _bad(path, None, f"unreadable parquet: {type(exc).__name__}: {str(exc)[:160]}")


def _decode_html(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for enc in ("gb18030", "big5"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def read_text_files(paths: list[str], html: bool) -> Iterator[tuple[str, dict]]:
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            yield _bad(path, None, f"cannot read: {exc}")
            continue
        if not data.strip():
            yield _bad(path, None, "empty file")
            continue
        meta = {"source": path, "line": 1}
        if html:
            yield "doc", {"id": stable_id(path, 1), "html": _decode_html(data), "text": "", "meta": meta}
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _bad(path, None, f"non-UTF-8 bytes at offset {exc.start}")
            continue
        yield "doc", {"id": stable_id(path, 1), "text": text, "meta": meta}


def read_warc(path: str) -> Iterator[tuple[str, dict]]:
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError as exc:  # pragma: no cover
        yield _bad(path, None, f"warcio missing: {exc}")
        return
    n = 0
    try:
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh):
                if record.rec_type != "response":
                    continue
                n += 1
                ctype = (record.http_headers.get_header("Content-Type") if record.http_headers else "") or ""
                if "html" not in ctype.lower():
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                data = record.content_stream().read()
                rid = record.rec_headers.get_header("WARC-Record-ID") or stable_id(path, n)
                yield "doc", {"id": rid.strip("<>"), "html": _decode_html(data), "text": "",
                              "meta": {"source": path, "line": n, "url": url}}
    except Exception as exc:  # warcio raises ArchiveLoadFailed and friends
        yield _bad(path, n + 1, f"unreadable archive: {type(exc).__name__}: {str(exc)[:160]}")


def read_shard(shard: dict, text_key: str) -> Iterator[tuple[str, dict]]:
    kind = shard["kind"]
    paths = shard["paths"]
    if kind == "jsonl":
        yield from read_jsonl(paths[0], text_key)
    elif kind == "parquet":
        yield from read_parquet(paths[0], text_key)
    elif kind == "warc":
        yield from read_warc(paths[0])
    elif kind in ("txtdir", "htmldir"):
        yield from read_text_files(paths, html=kind == "htmldir")
    else:
        for p in paths:
            yield _bad(p, None, "unsupported file type (expected jsonl[.gz|.zst], parquet, txt, html, warc)")
