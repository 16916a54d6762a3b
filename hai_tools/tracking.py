"""Where MLflow tracking goes: `$MLFLOW_TRACKING_URI` (a tracking server, e.g. http://mlflow.internal:5000), else
a SQLite store under the home folder (`$HAI_HOME/mlflow/mlflow.db`). The trainer logs runs there and governance
registers releases there; both need only `mlflow-skinny` (the full `mlflow` runs the server)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from hai_tools.errors import ConfigError
from hai_tools.settings import hai_home

TRAINING_EXPERIMENT = "hai-tools-training"
RELEASE_EXPERIMENT = "hai-tools-releases"


def tracking_uri() -> str:
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    folder = hai_home() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def mlflow_client() -> Any:
    """An MlflowClient on `tracking_uri()` (a typed error when MLflow is not installed)."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("MLflow tracking needs mlflow-skinny (pip install 'hai-tools[track]')")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created if new: on a local SQLite store its artifacts go beside the database (MLflow's
    default, `./mlruns`, would write them into whatever folder the process runs in)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    uri = tracking_uri()
    location = (
        (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
        if uri.startswith("sqlite:///")
        else None  # a tracking server keeps (or proxies) its own artifact store
    )
    return str(client.create_experiment(name, artifact_location=location))


def shown_uri(uri: str) -> str:
    """The tracking URI without credentials (for messages and logs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if not (parts.password or parts.username):
        return uri
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()


def reachable(client: Any, experiment: str) -> str:
    """The experiment's id, or a typed error naming the store when it cannot be reached (before any training)."""
    try:
        return experiment_id(client, experiment)
    except Exception as exc:  # MLflow raises its own and requests' errors alike
        raise ConfigError(
            f"MLflow tracking at {shown_uri(tracking_uri())} is not usable ({type(exc).__name__}): "
            "start the server or unset MLFLOW_TRACKING_URI for the local store"
        ) from None
