"""Starter chain files shipped with the package (the repo's `configs/`, linked into the package)."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


def available_templates() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml")) if CONFIGS.is_dir() else []


def template_text(name: str) -> str:
    return (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")


def template_summary(name: str) -> str:
    """The first comment line of a starter chain: what it is for."""
    for line in template_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def template_files(name: str) -> list[Path]:
    """The files under configs/data/ that a starter chain refers to (copied next to it by `ichain init`)."""
    text = template_text(name)
    data = CONFIGS / "data"
    return sorted(p for p in data.glob("*") if p.is_file() and f"data/{p.name}" in text) if data.is_dir() else []
