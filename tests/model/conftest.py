"""`run`: `ichain ARGS` in this process → (exit code, stdout, stderr)."""

import pytest

from model.model_helpers import ichain


@pytest.fixture
def run(capsys):
    return lambda *args: ichain(capsys, *args)
