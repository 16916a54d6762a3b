"""Reading the YAML config files of every CLI the same way: a missing file, bad YAML or a non-mapping is a
one-line ConfigError, and so is the first pydantic validation error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hai_tools.errors import ConfigError


def read_yaml_mapping(path: Path, what: str = "keys") -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of {what}")
    return loaded


def first_error(exc: ValidationError) -> str:
    """`where: message` of a validation error's first problem."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
