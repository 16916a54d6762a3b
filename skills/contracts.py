"""Request and result contracts of the skills (pydantic v2): what crosses the MCP and REST boundary.
Inputs are bounded and validated before any model runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from hai_tools.safety import default_policy

MAX_TEXTS = 64
MAX_TEXT_CHARS = 4000
MAX_CONTEXT_ITEMS = 8
MAX_NEW_TOKENS = 512

NonEmptyText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)
]


def _not_a_boolean(value: object) -> object:
    """JSON `true` is not a number of months (or tokens): refused here, before any lax coercion to 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


# One definition of every input field: the contracts below and the MCP tools' signatures (mcp_server.py) use
# these, so the MCP input schemas and the REST validation cannot drift apart.
Texts = Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_TEXTS, description="texts to embed")]
Question = Annotated[
    NonEmptyText, Field(description="the clinical question or case, written for a clinician")
]
ContextPassages = Annotated[
    list[NonEmptyText], Field(max_length=MAX_CONTEXT_ITEMS, description="optional evidence passages")
]
MaxNewTokens = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=MAX_NEW_TOKENS)]
AdapterName = Annotated[
    str | None, Field(max_length=128, description="served adapter name; default: the release's")
]
CaseId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
AgeMonths = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, le=216, description="0 to 18 years")]
Observations = NonEmptyText
DEFAULT_MAX_NEW_TOKENS = 256

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
    texts: Texts


# The vectors' advertised schema is "an array of arrays" rather than "... of numbers": MCP clients validate every
# structured result against the tool's output schema, and the SDK's jsonschema walk of 384 typed numbers per text
# took 2.2 ms per vector on the caller's side (0.06 ms untyped; bench/mcp_overhead.py). The server still builds
# the result through this model, so every element is a float; the description states the type.
Vectors = Annotated[
    list[list[float]],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "array"},
            "description": "one L2-normalised vector of `dimension` floats per input text, in order",
        }
    ),
]


class EmbedResult(BaseModel):
    vectors: Vectors
    dimension: int
    model: ModelIdentity
    backend: Backend
    audit_id: str


class ReasonRequest(_Request):
    question: Question
    context: ContextPassages = Field(default_factory=list)
    max_new_tokens: MaxNewTokens = DEFAULT_MAX_NEW_TOKENS
    adapter: AdapterName = None


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

    case_id: CaseId
    age_months: AgeMonths
    observations: Observations


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


RadiologyTask = Literal["bone_age", "rop", "fracture"]
ImageMediaType = Literal["image/png", "image/jpeg", "application/dicom"]
# base64 of the largest image any server accepts (its own limit, radiology.max_image_bytes, is checked decoded)
MAX_IMAGE_BASE64_CHARS = 64 * 1024 * 1024


class RadiographRequest(_Request):
    """One image for the radiology tool: base64 PNG, JPEG or DICOM (de-identified before the model sees it)."""

    task: RadiologyTask
    image_base64: Annotated[str, StringConstraints(min_length=4, max_length=MAX_IMAGE_BASE64_CHARS)]
    media_type: ImageMediaType | None = Field(None, description="default: recognised from the bytes")


class RadiographResult(_ReviewedResult):
    task: RadiologyTask
    bone_age_months: float | None = Field(None, description="bone age: the model's estimate")
    bone_age_interval_months: tuple[float, float] | None = Field(
        None, description="estimate +- the model's validated mean absolute error (from its evaluation report)"
    )
    probability: float | None = Field(None, description="rop / fracture: P(yes) from the model")
    threshold: float | None = Field(None, description="the decision threshold the finding was called at")
    finding: bool | None = Field(None, description="probability >= threshold")
    answer_text: str | None = Field(None, description="the model's own answer (bone age)")
    note: str | None = None
    image: dict[str, Any] = Field(
        description="what was read: media type, width, height, sha256 of the decoded pixels (never the image)"
    )
