"""Training configuration: defaults here, a YAML file over them, command-line flags over both.

python -m trainer --config configs/demo_lora.yaml --max_steps 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hai_tools.config_file import first_error, read_yaml_mapping
from hai_tools.errors import ConfigError, RegistryError
from hai_tools.models import EMBEDDED_REASONER
from hai_tools.registry.base import check_name

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainConfig(BaseModel):
    """Every knob of a training run. Field names are the CLI flags (`--lora_r 16`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train on what
    base_model_id: str = Field(
        EMBEDDED_REASONER, description="embedded:gemma-3-270m, a local HF folder or a hub id"
    )
    dataset: str = Field("demo-screening@2", description="registered dataset name@version")
    adapter_name: str = Field("screening-lora", description="name of the adapter (registry and card)")
    output_dir: str = Field("out/adapters/screening-lora", description="adapter artifact folder")
    modality: Literal["text", "image_text"] = Field(
        "text", description="image_text: a Gemma-3 image-text model on a prepare-radiology dataset"
    )
    method: Literal["lora", "qlora"] = Field("lora", description="lora, or qlora (bitsandbytes 4-bit base)")
    # adapter
    lora_r: int = Field(8, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    modules_to_save: list[str] = Field(default_factory=list, description="trained in full; forces a merge")
    use_dora: bool = False
    # optimisation
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="overrides num_train_epochs when > 0")
    per_device_train_batch_size: int = Field(4, ge=1)
    per_device_eval_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(512, ge=16)
    gradient_checkpointing: bool = False
    group_by_length: bool = Field(False, description="batches of similar lengths (less padding to compute)")
    # evaluation, checkpoints, logging
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(64, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="none, mlflow, tensorboard")
    seed: int = 42
    # differential privacy (Opacus DP-SGD on the LoRA weights; see docs/dp_plan.md)
    dp: bool = Field(False, description="train with DP-SGD through Opacus (LoRA only)")
    dp_target_epsilon: float = Field(8.0, gt=0, description="privacy budget epsilon for the whole run")
    dp_delta: float | None = Field(None, gt=0, lt=1, description="delta; default 1/(10 N)")
    dp_max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm")
    dp_accountant: Literal["prv", "rdp", "gdp"] = Field("prv", description="Opacus privacy accountant")
    dp_optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer the noised gradients feed")
    dp_max_records_per_patient: int | None = Field(
        None,
        ge=1,
        description="keep at most k records per patient (the registered patient id column) so the card can state "
        "a patient-level epsilon; default: all records, k = the most any patient has",
    )
    # run control
    smoke_test: bool = Field(False, description="a few steps on a few rows, to check the pipeline")
    resume: bool = Field(False, description="continue from the last checkpoint of this output_dir")
    license: str = Field("gemma", description="license of the adapter (follows the base model's terms)")

    @field_validator("adapter_name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_name("adapter_name", value)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one target module is required")
        return value

    def effective(self) -> TrainConfig:
        """The config actually run: a smoke test shrinks data, steps and intervals."""
        if not self.smoke_test:
            return self
        steps = self.max_steps if self.max_steps > 0 else 10
        return self.model_copy(
            update={
                "max_steps": steps,
                "max_train_samples": min(self.max_train_samples or 32, 32),
                "max_eval_samples": min(self.max_eval_samples or 8, 8),
                "eval_steps": min(self.eval_steps, steps),
                "save_steps": min(self.save_steps, steps),
                "logging_steps": 1,
            }
        )

    def fingerprint(self) -> str:
        """Hash of the settings that define the result; a resumed run must match it."""
        ignore = {
            "resume",
            "max_steps",
            "num_train_epochs",
            "save_steps",
            "save_total_limit",
            "report_to",
            "logging_steps",
            "eval_steps",
        }
        data = {k: v for k, v in self.model_dump().items() if k not in ignore}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse settings for a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0])
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is list:
        return None, {"nargs": "+"}
    if origin is Literal:
        return None, {"choices": list(typing.get_args(annotation))}
    return annotation, {}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig keys; flags override it")
    for name, field in TrainConfig.model_fields.items():
        flag_type, extra = _flag_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        helptext = (field.description + "; " if field.description else "") + f"default: {default}"
        if flag_type is not None:
            extra["type"] = flag_type
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, help=helptext, **extra)


def load_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < YAML file < flags. Unknown YAML keys and bad values are a ConfigError."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        data.update(read_yaml_mapping(Path(args.config), "TrainConfig keys"))
    data.update({k: v for k, v in vars(args).items() if k in TrainConfig.model_fields})
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"config key {first_error(exc)}") from None
