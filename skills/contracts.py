"""Request and result contracts of the skills (pydantic v2): what crosses the MCP and REST boundary.
Inputs are bounded and validated before any model runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hai_tools.safety import default_policy

MAX_TEXTS = 64
MAX_TEXT_CHARS = 4000
MAX_CONTEXT_ITEMS = 8
MAX_NEW_TOKENS = 512

NonEmptyText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)
]
Backend = Literal["vllm", "local", "tflite"]
ScreeningLabel = Literal["refer", "monitor", "on-track"]


class ModelIdentity(BaseModel):
    """Which model answered: base, adapter, release and the manifest hash that pins them."""

    base: str
    adapter: str | None = None
    release: str | None = None
    release_hash: str | None = Field(None, description="content hash of the signed release manifest")
    manifest_hash: str | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EmbedRequest(_Request):
    texts: list[NonEmptyText] = Field(min_length=1, max_length=MAX_TEXTS, description="texts to embed")


class EmbedResult(BaseModel):
    vectors: list[list[float]]
    dimension: int
    model: ModelIdentity
    backend: Backend
    audit_id: str


class ReasonRequest(_Request):
    question: NonEmptyText = Field(description="the clinical question or case, written for a clinician")
    context: list[NonEmptyText] = Field(
        default_factory=list, max_length=MAX_CONTEXT_ITEMS, description="optional evidence passages"
    )
    max_new_tokens: int = Field(256, ge=1, le=MAX_NEW_TOKENS)
    adapter: str | None = Field(
        None, max_length=128, description="served adapter name; default: the release's"
    )


class _ReviewedResult(BaseModel):
    requires_clinician_review: Literal[True] = True
    disclaimer: str = Field(default_factory=lambda: default_policy().disclaimer)
    model: ModelIdentity | None
    backend: Backend | None
    audit_id: str
    guard: str | None = Field(
        None, description="the guard that checked it: artifact name@hash, or rules-only"
    )


class ReasonResult(_ReviewedResult):
    answer: str | None
    rationale: str | None
    abstained: bool = False
    abstain_reason: str | None = None


class ScreeningRequest(_Request):
    """The original project's screening call: `{case_id, age_months, observations}`."""

    case_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    age_months: int = Field(ge=0, le=216, description="0 to 18 years")
    observations: NonEmptyText

    @field_validator("age_months", mode="before")
    @classmethod
    def _integer_months(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("age_months must be a number of months")
        return value


class ScreeningResult(_ReviewedResult):
    case_id: str
    label: ScreeningLabel | None = Field(description="always one of the labels unless the request abstained")
    probabilities: dict[str, float] | None = Field(
        None,
        description="P(label) by the decision procedure (one-hot where the backend gives only the choice)",
    )
    rationale: str | None
    abstained: bool = False
    abstain_reason: str | None = None


class CallerRef(BaseModel):
    """A caller as results name it: id and role, never a token."""

    id: str
    role: str


class ReviewHandle(BaseModel):
    """What `submit_for_review` returns: the case waits for a clinician; no model text."""

    review_id: str
    status: Literal["pending"] = "pending"
    case_id: str
    submitted_by: CallerRef


class ReviewedResult(BaseModel):
    """What `get_reviewed_result` returns: `pending`, `rejected` (nothing released), or `released` with the
    text a clinician approved or edited and the release statement signed by the review service."""

    review_id: str
    status: Literal["pending", "rejected", "released"]
    text: str | None = None
    statement: dict[str, Any] | None = None
    signature: str | None = None
