"""User-facing errors: every bad input becomes one or more `Problem`s, never a traceback."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, located as precisely as we can."""

    message: str
    path: str = ""  # dotted field path, e.g. "stages.finetune.lora.r"
    file: str | None = None
    line: int | None = None
    hint: str | None = None  # what would be right

    def where(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def render(self) -> str:
        parts = [p for p in (self.where(), self.path) if p]
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class ChainError(Exception):
    """Raised with every problem found; the CLI prints them and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str, exit_code: int | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(p.render() for p in self.problems))


class StageFailed(ChainError):
    """An upstream job ran and failed; exit 1 (the input was fine, the run was not)."""

    exit_code = 1
