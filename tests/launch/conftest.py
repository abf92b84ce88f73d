"""Launcher tests import their helpers by module name; the `slurm` fixture lives in tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
