"""docs/config.md is generated from the schema; it must not drift."""

from __future__ import annotations

from pathlib import Path

from internlm_chain.config.schema import chain_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_current():
    assert DOC.read_text(encoding="utf-8").rstrip("\n") == chain_markdown().rstrip("\n"), (
        "docs/config.md is stale: run `ichain config schema --markdown > docs/config.md`")
