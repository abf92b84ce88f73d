"""What this machine offers the runtimes: NVIDIA GPUs (via nvidia-smi, never torch) and the driver."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Gpus:
    gpus: list[dict] = field(default_factory=list)  # index, name, memory
    driver: str | None = None
    cuda: str | None = None  # the highest CUDA version the driver supports
    error: str | None = None  # nvidia-smi exists but failed


def query_gpus(timeout: float = 20) -> Gpus:
    smi = shutil.which("nvidia-smi")
    out = Gpus()
    if not smi:
        return out
    try:
        q = subprocess.run([smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=timeout)
        if q.returncode != 0:
            out.error = (q.stderr or q.stdout).strip()[:200] or f"exit {q.returncode}"
            return out
        for row in q.stdout.strip().splitlines():
            parts = [p.strip() for p in row.split(",")]
            if len(parts) == 4:
                out.gpus.append({"index": parts[0], "name": parts[1], "memory": parts[2]})
                out.driver = parts[3]
        m = re.search(r"CUDA Version:\s*([\d.]+)", subprocess.run([smi], capture_output=True, text=True,
                                                                   timeout=timeout).stdout)
        out.cuda = m.group(1) if m else None
    except (OSError, subprocess.SubprocessError) as exc:
        out.error = str(exc)
    return out


def detect_device() -> str:
    """`cuda` when nvidia-smi lists a GPU, else `cpu` — what `device: auto` means. Never imports torch."""
    if not shutil.which("nvidia-smi"):
        return "cpu"
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    return "cuda" if res.returncode == 0 and "GPU" in res.stdout else "cpu"
