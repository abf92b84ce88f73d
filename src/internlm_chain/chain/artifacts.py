"""Typed artifacts that flow between stages (see DESIGN.md).

Each records where it lives, a content fingerprint and, where it matters, the chat template, so the
template used in fine-tuning is the one serving, evaluation and agents use.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class Artifact(BaseModel):
    kind: str
    path: str = Field(description="File or directory; for an Endpoint, its URL.")
    fingerprint: str = ""
    chat_template: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class CleanCorpus(Artifact):
    kind: Literal["CleanCorpus"] = "CleanCorpus"


class TokenizedCorpus(Artifact):
    kind: Literal["TokenizedCorpus"] = "TokenizedCorpus"


class PretrainText(Artifact):
    kind: Literal["PretrainText"] = "PretrainText"


class SFTData(Artifact):
    kind: Literal["SFTData"] = "SFTData"


class Tokenizer(Artifact):
    kind: Literal["Tokenizer"] = "Tokenizer"


class DataReport(Artifact):
    kind: Literal["DataReport"] = "DataReport"


class InternEvoCheckpoint(Artifact):
    kind: Literal["InternEvoCheckpoint"] = "InternEvoCheckpoint"


class HFModel(Artifact):
    kind: Literal["HFModel"] = "HFModel"


class RewardModel(Artifact):
    """A model that scores a conversation (one number per reply), not a chat model: nothing serves or
    evaluates it as one. meta["reward_token_id"]: the token whose position carries the score."""

    kind: Literal["RewardModel"] = "RewardModel"


class XTunerCheckpoint(Artifact):
    kind: Literal["XTunerCheckpoint"] = "XTunerCheckpoint"


class Adapter(Artifact):
    kind: Literal["Adapter"] = "Adapter"
    base_model: str | None = None


class QuantizedModel(Artifact):
    kind: Literal["QuantizedModel"] = "QuantizedModel"
    model_format: Literal["awq", "gptq", "smooth_quant"] = "awq"


class Endpoint(Artifact):
    kind: Literal["Endpoint"] = "Endpoint"
    served_name: str = ""
    api_key_env: str | None = Field(None, description="Name of the variable holding the key; never the key.")


class EvalReport(Artifact):
    kind: Literal["EvalReport"] = "EvalReport"


class AgentTranscript(Artifact):
    kind: Literal["AgentTranscript"] = "AgentTranscript"


AnyArtifact = Annotated[
    CleanCorpus | TokenizedCorpus | PretrainText | SFTData | Tokenizer | DataReport | InternEvoCheckpoint
    | HFModel | RewardModel | XTunerCheckpoint | Adapter | QuantizedModel | Endpoint | EvalReport | AgentTranscript,
    Field(discriminator="kind"),
]
ARTIFACT_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyArtifact)


def artifact_from_dict(data: dict) -> Artifact:
    return ARTIFACT_ADAPTER.validate_python(data)
