"""Chain-file text for the deploy tests."""

from __future__ import annotations

from pathlib import Path


def chain_text(model: Path | str, workdir: Path, device: str = "cpu", deploy: str = "", extra: str = "") -> str:
    body = "\n".join("    " + line for line in deploy.strip().splitlines())
    return (f"name: t\nworkdir: {workdir}\ndevice: {device}\nmodel:\n  path: {model}\n{extra}"
            f"stages:\n  deploy:\n{body or '    {}'}\n".replace("deploy:\n    {}", "deploy: {}"))
