"""`python -m governance release ... --mlflow`: the signed release in the MLflow Model Registry.

The release's signed manifest and signature, its model card, gate result and eval report are logged as artifacts
of a run in the `hai-tools-releases` experiment; a registered model (the release's name) gets a version whose
source is those artifacts, tagged with the gate verdict, the release id and the manifest's hash. Model weights
stay in the release folder (the manifest names each file's hash): the registry points at the evidence, and anyone
who downloads it verifies the signature and every file against the manifest (`verify_downloaded`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hai_tools.errors import HaiError, ManifestError
from hai_tools.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, sha256_file
from hai_tools.release import verify_signed_manifest
from hai_tools.tracking import RELEASE_EXPERIMENT, experiment_id, mlflow_client

log = logging.getLogger("governance")

EVIDENCE = (MANIFEST_NAME, SIGNATURE_NAME, "README.md", "gate.json", "eval_report.json", "lineage.json")


class RegistryEvidenceInvalid(HaiError):
    """Artifacts downloaded from the registry do not verify against the release's signed manifest."""


def register_release(release_dir: Path) -> dict[str, str]:
    """Log the release's evidence and register it as a model version; returns the run id, name and version."""
    from mlflow.entities import Param, RunTag

    client = mlflow_client()
    manifest = Manifest.model_validate_json((release_dir / MANIFEST_NAME).read_text())
    gate = json.loads((release_dir / "gate.json").read_text())
    verdict = "passed" if gate.get("passed") else "failed"
    tags = {
        "hai.release_id": manifest.name,
        "hai.manifest_hash": manifest.content_hash,
        "hai.gate": verdict,
        "hai.policy": str(manifest.config.get("policy")),
        "hai.clinician_review_required": "true",
    }
    run = client.create_run(experiment_id(client, RELEASE_EXPERIMENT), run_name=manifest.name)
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        params=[Param(f"input.{i.kind}", i.hash) for i in manifest.inputs],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    for name in EVIDENCE:
        client.log_artifact(run_id, str(release_dir / name), "release")
    client.set_terminated(run_id)
    if not client.search_registered_models(filter_string=f"name = '{manifest.name}'"):
        client.create_registered_model(
            manifest.name,
            description="hai-tools release (clinical decision support; clinician review required)",
        )
    version = client.create_model_version(
        manifest.name, source=f"runs:/{run_id}/release", run_id=run_id, tags=tags
    )
    log.info("registered %s version %s (run %s)", manifest.name, version.version, run_id)
    return {"run_id": run_id, "name": manifest.name, "version": str(version.version)}


def verify_downloaded(folder: Path, public_key: Path) -> Manifest:
    """Check downloaded release evidence: the manifest's signature, then each file's hash against it."""
    try:
        manifest = verify_signed_manifest(folder, public_key)
    except ManifestError as exc:
        raise RegistryEvidenceInvalid(str(exc)) from None
    for name in EVIDENCE:
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            continue
        expected = manifest.files.get(name)
        actual = sha256_file(folder / name) if (folder / name).exists() else None
        if expected is None or actual is None or expected != actual:
            raise RegistryEvidenceInvalid(f"{name}: does not match the signed manifest (hash {actual})")
    return manifest


def download_version(name: str, version: str, target: Path) -> Path:
    """The evidence of a registered version, downloaded into `target`."""
    import mlflow

    client: Any = mlflow_client()
    source = client.get_model_version(name, version).source
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))
