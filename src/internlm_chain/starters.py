"""Starter chain files shipped with the package (the repo's `configs/`, linked into the package)."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


def available_templates() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml")) if CONFIGS.is_dir() else []


def template_text(name: str) -> str:
    return (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")
