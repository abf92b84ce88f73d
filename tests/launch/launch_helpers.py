"""Shared by the launcher tests."""

from __future__ import annotations

from pathlib import Path

FAKE = Path(__file__).parents[1] / "runner" / "fake_stages.py"
