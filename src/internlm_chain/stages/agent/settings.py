"""`stages.agent`: Lagent + AgentLego agents."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from internlm_chain.config.base import StageSettings, StrictModel

AgentKind = Literal["react", "rewoo", "autogpt", "internlm2"]
JSONScalar = str | int | float | bool | None
JSONValue = JSONScalar | list[JSONScalar]
# with no questions configured (the quickstart's `agent: {}`), the stage runs this smoke question
DEFAULT_QUESTIONS = ["What is 12 * 34 + 5? Use the calculator."]


class ToolEntry(StrictModel):
    """A tool with constructor arguments, or (some) tools of a tool server."""

    name: str | None = Field(None, description="Calculator, lagent:ArxivSearch, path/file.py:Class or python.")
    args: dict[str, JSONValue] = Field(default_factory=dict, description="Constructor arguments.")
    remote: str | None = Field(None, description="An AgentLego tool server URL (instead of `name`).")
    names: list[str] = Field(default_factory=list, description="With `remote`: only these tools (default: all).")

    def as_entry(self) -> dict:
        return self.model_dump(exclude_defaults=True)


class AgentLLMSettings(StrictModel):
    """Which model the agent thinks with. Default: the deploy stage's Endpoint (when deploy is enabled)."""

    endpoint: str | None = Field(
        None, description="The deploy stage's endpoint, e.g. `${stages.deploy.outputs.endpoint}`; its served name, "
                          "key variable and chat template come with it. Default when deploy is enabled.")
    url: str | None = Field(
        None, description="Any OpenAI-compatible endpoint instead: a base URL (http://host:port or …/v1) or the "
                          "full …/v1/chat/completions URL.")
    served_name: str | None = Field(
        None, description="Model name sent in each request. Default: the Endpoint's served name; with `url` and "
                          "no name, the request carries no model name.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself).")
    hf_model: str | None = Field(
        None, description="A local Hugging Face model directory, loaded in-process through Lagent's HF wrapper "
                          "(needs torch and transformers in the agent runtime).")
    extra_body: dict[str, JSONValue] = Field(
        default_factory=dict, description="Extra fields merged into each chat request (server-specific options).")


class AgentGenerationSettings(StrictModel):
    max_new_tokens: int = Field(512, ge=1, description="Most tokens per model reply.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    stop_words: list[str] = Field(
        default_factory=list, description="Extra stop words; each agent protocol's own (ReAct: `Response:`) are "
                                          "always added and also cut on our side.")


class PythonToolSettings(StrictModel):
    timeout_s: float = Field(10.0, gt=0, le=600, description="Wall-clock and CPU-time limit per call.")
    memory_mb: int = Field(512, ge=64, le=65536, description="Address-space limit of the subprocess.")


class AgentSettings(StageSettings):
    OUTPUTS: ClassVar[tuple[str, ...]] = ("transcript", "bench")

    agent: AgentKind = Field("react", description="Agent protocol: react, rewoo, autogpt or internlm2 (InternLM2's "
                                                  "function-calling protocol).")
    llm: AgentLLMSettings = Field(default_factory=AgentLLMSettings)
    generation: AgentGenerationSettings = Field(default_factory=AgentGenerationSettings)
    max_turns: int = Field(4, ge=1, le=100, description="Most model turns per question (ReWOO: planner attempts).")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of each model request.")
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after a connection error or a 5xx/429 reply.")
    tools: list[str | ToolEntry] = Field(
        default_factory=lambda: ["Calculator"],
        description="AgentLego built-ins by name (Calculator), Lagent actions (lagent:ArxivSearch), user tools "
                    "(tools/weather.py:Weather), a tool server URL (http://127.0.0.1:16180), `python`; or "
                    "{name: …, args: {…}} / {remote: URL, names: […]}.")
    allow: list[str] = Field(
        default_factory=list, description="Opt-in for tools that run code or use the network: tool names, or the "
                                          "kinds `code` and `network` (e.g. [python]).")
    python_tool: PythonToolSettings = Field(default_factory=PythonToolSettings)
    questions: list[str] = Field(default_factory=lambda: list(DEFAULT_QUESTIONS),
                                 description="Questions the stage answers (its transcript); [] with `bench` to only "
                                             "benchmark.")
    bench: str | None = Field(
        None, description="TASKS.jsonl to benchmark the agent on: {question, answer | check: {contains|regex|python}}.")
