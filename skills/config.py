"""Server configuration: one YAML file plus environment overrides pick the release, the models and the
backend order. `python mcp_server.py --config configs/mcp_server.yaml`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hai_tools.callers import Caller
from hai_tools.config_file import first_error, read_yaml_mapping
from hai_tools.errors import ConfigError
from hai_tools.models import EMBEDDED_EMBEDDER, EMBEDDED_REASONER

BackendName = Literal["vllm", "local", "tflite"]
_LOCAL_ONLY: list[BackendName] = ["local"]


class VLLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("http://127.0.0.1:8000", description="the generation server")
    served_model: str | None = None
    embed_model: str | None = None
    embed_base_url: str | None = Field(
        None, description="the embedding server (vLLM serves one model per server); default: base_url"
    )
    recheck_s: float = Field(30.0, gt=0, description="how often /v1/models is read again")
    api_key_env: str = "VLLM_API_KEY"


class TFLiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedder_dir: str | None = None
    reasoner_dir: str | None = None
    variant: Literal["int8", "fp32"] = "int8"


class HttpSettings(BaseModel):
    """The HTTP face (`--http`): who may reach it and how much it reads."""

    model_config = ConfigDict(extra="forbid")

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host headers /mcp accepts (the SDK's DNS-rebinding protection); required off loopback",
    )
    allowed_origins: list[str] = Field(default_factory=list, description="Origin headers /mcp accepts")
    cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed by CORS; none: off"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies are refused (413)")
    json_response: bool = Field(False, description="plain JSON responses instead of SSE-framed ones")
    stateless: bool = Field(
        False, description="no MCP session (each request stands alone; progress notifications are not sent)"
    )


class TracingSettings(BaseModel):
    """OpenTelemetry spans (off by default): one per MCP request and one per backend attempt, with the tool,
    backend, outcome and abstention rule as attributes; never a request's text."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    exporter: Literal["console", "otlp"] = Field(
        "otlp", description="otlp: OTLP over gRPC to `endpoint`; console: JSON lines on stderr"
    )
    endpoint: str = Field("http://127.0.0.1:4317", description="the OTLP collector (gRPC)")
    service_name: str = "hai-tools"


def _default_thresholds() -> dict[Literal["rop", "fracture"], float]:
    return {"rop": 0.5, "fracture": 0.5}


class RadiologySettings(BaseModel):
    """The radiology tool (`read_radiograph`, `POST /infer_image`): a merged Gemma-3 image-text model, read locally."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description="merged image-text model folder (python -m export merge of a radiology adapter); a signed "
        "radiology release decides it instead",
    )
    eval_report: str | None = Field(
        None,
        description="its `python -m evals radiology` folder: the bone-age interval is +- its validated MAE",
    )
    thresholds: dict[Literal["rop", "fracture"], float] = Field(
        default_factory=_default_thresholds,
        description="P(yes) at or above which a finding is called (the threshold the evaluation used)",
    )
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=48 * 1024 * 1024)
    max_pixels: int = Field(4096 * 4096, ge=64 * 64)
    allow_burned_in: bool = Field(False, description="read DICOMs flagged or suspected of burned-in text")
    burned_in_reason: str | None = Field(None, description="required with allow_burned_in; logged at start")

    @field_validator("thresholds")
    @classmethod
    def _every_task(cls, given: dict[Any, float]) -> dict[Any, float]:
        if any(not 0 < value < 1 for value in given.values()):
            raise ValueError("a threshold must lie strictly between 0 and 1")
        return {**_default_thresholds(), **given}


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str | None = Field(
        None, description="artifact folder whose card and manifest are served as resources"
    )
    release_public_key: str | None = Field(
        None, description="trusted ed25519 key; required for a signed release"
    )
    reasoner: str | None = Field(
        EMBEDDED_REASONER, description="local reasoner: model/merged/adapter folder or id"
    )
    embedder: str | None = Field(EMBEDDED_EMBEDDER, description="local embedder: folder or id")
    guard: str | None = Field(
        None,
        description="safety guard artifact (python -m trainer guard); verified at start; none: the rules alone",
    )
    safety_policy: str | None = Field(
        None, description="safety policy YAML (categories, thresholds, rules); default: the packaged one"
    )
    backends: list[BackendName] = Field(default_factory=lambda: _LOCAL_ONLY.copy(), min_length=1)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    tflite: TFLiteSettings = Field(default_factory=TFLiteSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    radiology: RadiologySettings | None = None
    timeout_s: float = Field(120.0, gt=0, description="one backend attempt")
    deadline_s: float = Field(180.0, gt=0, description="a whole call, across every backend it tries")
    max_queue: int = Field(
        16, ge=1, description="calls in flight or waiting per backend; more: Overloaded (429)"
    )
    breaker_threshold: int = Field(3, ge=1)
    breaker_cooldown_s: float = Field(30.0, ge=0)
    token_env: str = Field(
        "HAI_MCP_TOKEN", description="a single bearer token without a role: served as a pipeline caller"
    )
    token_file: str | None = None
    callers: str | None = Field(
        None,
        description="callers registry YAML (python -m hai_tools.callers); default $HAI_HOME/callers.yaml",
    )
    stdio_caller: Caller = Field(
        default_factory=lambda: Caller(id="stdio", role="pipeline"),
        description="who a stdio launch is: pipeline unless the launching config says otherwise",
    )
    workflow: str | None = Field(
        None, description="workflow config behind submit_for_review (default: the workflow's built-ins)"
    )
    audit_log: str | None = None


ENV_OVERRIDES = {
    "HAI_MCP_RELEASE": "release",
    "HAI_MCP_REASONER": "reasoner",
    "HAI_MCP_EMBEDDER": "embedder",
    "HAI_MCP_BACKENDS": "backends",
    "HAI_MCP_VLLM_URL": "vllm.base_url",
    "HAI_MCP_VLLM_MODEL": "vllm.served_model",
}


def load_server_config(path: Path | None) -> ServerConfig:
    data: dict[str, object] = {}
    if path is not None:
        data.update(read_yaml_mapping(path))
    for env, key in ENV_OVERRIDES.items():
        value = os.environ.get(env)
        if value is None:
            continue
        parsed: object = [v.strip() for v in value.split(",") if v.strip()] if key == "backends" else value
        if "." in key:
            section, name = key.split(".")
            current = data.get(section)
            data[section] = {**(current if isinstance(current, dict) else {}), name: parsed}
        else:
            data[key] = parsed
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"server config {first_error(exc)}") from None


def read_token(config: ServerConfig) -> str | None:
    """The bearer token for HTTP: from the token file, else the environment variable. Never logged."""
    if config.token_file:
        token = Path(config.token_file).read_text().strip()
        if not token:
            raise ConfigError(f"token file {config.token_file} is empty")
        return token
    return os.environ.get(config.token_env) or None
