"""Errors the worker reports in one line (exit code tells the caller which kind)."""

from __future__ import annotations

EXIT_CONFIG = 2  # bad spec, unknown tool, missing packages: nothing ran
EXIT_LLM = 3  # the LLM endpoint failed (unreachable, HTTP error, garbage)
EXIT_AGENT = 4  # the agent itself failed


class AgentRunError(Exception):
    exit_code = EXIT_AGENT


class SpecError(AgentRunError):
    exit_code = EXIT_CONFIG


class LLMError(AgentRunError):
    exit_code = EXIT_LLM
