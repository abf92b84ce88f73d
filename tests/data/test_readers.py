"""Readers quarantine bad input with file and line and keep going (stdlib path, no runtime needed)."""

from __future__ import annotations

import gzip
import json

from internlm_chain.workers.datapipe.readers import list_shards, read_shard


def _read(tmp_path, name: str, data: bytes, text_key: str = "text"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    shards = list_shards([str(path)])
    return list(read_shard(shards[0], text_key))


def test_malformed_lines_are_quarantined_with_line_numbers(tmp_path):
    data = (b'{"id": "a", "text": "good", "lang_hint": "en"}\n{"text": \n\n{"body": "no text"}\n'
            b'{"text": "caf\xe9"}\n[1, 2]\n{"text": 5}\n{"text": "also good"}\n')
    items = _read(tmp_path, "x.jsonl", data)
    docs = [d for k, d in items if k == "doc"]
    bad = [d for k, d in items if k == "malformed"]
    assert [d["text"] for d in docs] == ["good", "also good"]
    assert docs[0]["id"] == "a" and docs[0]["meta"]["lang_hint"] == "en" and docs[0]["meta"]["line"] == 1
    assert docs[1]["id"].endswith("-8")  # stable id from file and line when the record has none
    assert [(b["line"], b["error"].split(":")[0].split(" at ")[0]) for b in bad] == [
        (2, "malformed JSON"), (4, "missing text key 'text'"), (5, "non-UTF-8 bytes"),
        (6, "expected a JSON object, got list"), (7, "'text' is a int, not a string")]
    assert all(b["file"].endswith("x.jsonl") for b in bad)


def test_empty_and_truncated_files(tmp_path):
    assert _read(tmp_path, "empty.jsonl", b"") == [("malformed", {"file": str(tmp_path / "empty.jsonl"),
                                                                   "line": None, "error": "empty file"})]
    good = gzip.compress(b'{"text": "one"}\n{"text": "two"}\n' * 50)
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
    items = list(read_shard(list_shards([str(tmp_path / "cut.jsonl.gz")])[0], "text"))
    assert items[-1][0] == "malformed" and "unreadable archive" in items[-1][1]["error"]


def test_conversations_and_custom_text_key(tmp_path):
    rec = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}
    items = _read(tmp_path, "c.jsonl.gz", (json.dumps(rec, ensure_ascii=False) + "\n").encode())
    assert items[0][1]["messages"][1]["content"] == "你好！" and items[0][1]["text"] == "你好\n你好！"
    items = _read(tmp_path, "k.jsonl", b'{"content": "body text"}\n', text_key="content")
    assert items[0][1]["text"] == "body text"


def test_directories_group_txt_and_html(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("一", encoding="utf-8")
    (tmp_path / "d" / "b.txt").write_bytes(b"\xff\xfe bad")
    (tmp_path / "d" / "p.html").write_text("<p>x</p>", encoding="utf-8")
    (tmp_path / "d" / "data.jsonl").write_text('{"text": "t"}\n', encoding="utf-8")
    shards = list_shards([str(tmp_path / "d")])
    assert sorted(s["kind"] for s in shards) == ["htmldir", "jsonl", "txtdir"]
    txt = next(s for s in shards if s["kind"] == "txtdir")
    items = list(read_shard(txt, "text"))
    assert items[0][0] == "doc" and items[1][0] == "malformed" and "non-UTF-8" in items[1][1]["error"]
