"""`report_to: [mlflow]`: the trainer's run in MLflow. Transformers' MLflow callback logs the training arguments
and the loss curve as training goes; once the adapter is written, its run also gets the config (`hai.*` params),
the final metrics, the adapter's manifest and card as artifacts, and the manifest's content hash and dataset as
tags, so a run in the tracking store points at exactly one adapter (and `verify` on the downloaded manifest
checks it). Tracking URI: hai_tools.tracking."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hai_tools.manifest import Manifest
from hai_tools.tracking import (
    TRAINING_EXPERIMENT,
    experiment_id,
    mlflow_client,
    reachable,
    shown_uri,
    tracking_uri,
)

log = logging.getLogger("trainer")


def configure_mlflow(run_name: str) -> None:
    """Before training: point transformers' MLflow callback at the tracking store (checked reachable)."""
    client = mlflow_client()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", TRAINING_EXPERIMENT)
    os.environ.setdefault("MLFLOW_RUN_NAME", run_name)
    reachable(client, os.environ["MLFLOW_EXPERIMENT_NAME"])


def _flat(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flat(f"{prefix}.{key}", item))
        return out
    return {prefix: json.dumps(value) if isinstance(value, list | tuple) else str(value)}


def log_adapter(manifest_path: Path) -> str:
    """Attach the written adapter to the training's MLflow run (a new run if none was logged); returns its id."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client()
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    run = mlflow.last_active_run()
    if run is None:
        experiment = experiment_id(client, os.environ.get("MLFLOW_EXPERIMENT_NAME", TRAINING_EXPERIMENT))
        run_id = client.create_run(experiment, run_name=manifest.name).info.run_id
    else:
        run_id = run.info.run_id
    params = {k: v[:6000] for k, v in _flat("hai", manifest.config).items()}
    metrics = {k: float(v) for k, v in manifest.metrics.items() if isinstance(v, int | float)}
    tags = {
        "hai.adapter": manifest.name,
        "hai.manifest_hash": manifest.content_hash,
        "hai.dataset": manifest.inputs[0].name,
        "hai.dataset_hash": manifest.inputs[0].hash,
        "hai.base_model_hash": manifest.inputs[1].hash,
    }
    client.log_batch(
        run_id,
        metrics=[
            Metric(f"final.{k}", v, int(time.time() * 1000), int(manifest.metrics.get("global_step", 0)))
            for k, v in metrics.items()
        ],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    for name in ("manifest.json", "README.md", "adapter_config.json"):
        if (manifest_path.parent / name).exists():
            client.log_artifact(run_id, str(manifest_path.parent / name), "adapter")
    if run is not None and client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id)
    log.info("MLflow run %s at %s: adapter %s", run_id, shown_uri(tracking_uri()), manifest.content_hash)
    return str(run_id)
