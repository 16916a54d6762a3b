"""Where hai-tools keeps its caches: materialised models, the registry, training runs.

One home folder, `$HAI_HOME` (default: the user's cache dir, `~/.cache/hai-tools`).
"""

from __future__ import annotations

import os
from pathlib import Path


def hai_home() -> Path:
    """The home folder for every cache of hai-tools, created on first use."""
    env = os.environ.get("HAI_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        home = (Path(xdg) if xdg else Path.home() / ".cache") / "hai-tools"
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def models_dir() -> Path:
    """Materialised models: `$HAI_MODELS` if set (a cache teams or test runs can share), else under home."""
    env = os.environ.get("HAI_MODELS")
    path = Path(env).expanduser() if env else hai_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = hai_home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_url() -> str:
    """Registry location: `$HAI_REGISTRY` (a sqlite path or sqlite:/// URL), else `$HAI_HOME/registry.sqlite`."""
    return os.environ.get("HAI_REGISTRY") or f"sqlite:///{hai_home() / 'registry.sqlite'}"
