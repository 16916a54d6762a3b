"""What a release is for, as data: the task, its users and population, what is out of scope and the known
risks, one YAML per task (`governance/tasks/screening.yaml`, `radiology.yaml`, or any file), rendered into the
model card so a radiology release does not carry screening text.

    python -m governance release ... --task radiology          # a built-in task, or --task path/to/task.yaml
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.config_file import first_error
from hai_tools.errors import ConfigError

BUILT_IN = Path(__file__).resolve().parent / "tasks"


class TaskCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    hf_task_type: str = Field(description="Hugging Face model-index task type")
    title: str = Field(description="the task in a few words (model-index task name)")
    task: str = Field(description="what the model proposes, for whom, from what")
    users: str
    population: str
    out_of_scope: list[str] = Field(min_length=1)
    risks: list[str] = Field(min_length=1)
    license_name: str = Field(description="the license of the weights when the header says license: other")
    license_link: str | None = None


def load_task(spec: str | Path) -> tuple[TaskCard, str]:
    """A built-in task by name or a YAML file; returns the card and the file's text (kept with the release)."""
    path = Path(spec)
    if not path.suffix and (BUILT_IN / f"{spec}.yaml").is_file():
        path = BUILT_IN / f"{spec}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BUILT_IN.glob("*.yaml")))
        raise ConfigError(f"task {spec} is neither a built-in task ({known}) nor a YAML file")
    text = path.read_text()
    try:
        return TaskCard.model_validate(yaml.safe_load(text) or {}), text
    except yaml.YAMLError:
        raise ConfigError(f"task {path} is not valid YAML") from None
    except ValidationError as exc:
        raise ConfigError(f"task {path}: {first_error(exc)}") from None
