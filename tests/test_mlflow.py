"""MLflow tracking and the Model Registry, against a real `mlflow server` (the full mlflow from its own venv,
`.venv-mlflow`, which `make test` installs) started on loopback, and the default local SQLite store: a training
run logs its params, metrics, manifest and card; `governance release --mlflow` registers the signed release with
its evidence as artifacts and the gate verdict and release id as tags; the downloaded evidence verifies, and a
changed file or a foreign key is refused by name. An unreachable tracking server stops training before anything
is written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hai_tools.errors import ConfigError
from hai_tools.manifest import verify_artifact
from tests.conftest import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"


def _train(model: Path, out: Path) -> Path:
    from trainer.config import TrainConfig
    from trainer.train import train

    config = TrainConfig(
        base_model_id=str(model),
        dataset="demo-screening@2",
        adapter_name=out.name,
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=160,
        eval_steps=2,
        save_steps=2,
        logging_steps=1,
        max_eval_samples=4,
        report_to=["mlflow"],
    )
    return train(config)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert MLFLOW.exists(), "the MLflow server venv is missing: `make test` installs it (make mlflow-env)"
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = base / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{base / 'mlflow.db'}",
                "--artifacts-destination",
                str(base / "artifacts"),
            ],
            cwd=base,
            stdout=handle,
            stderr=handle,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, log, timeout_s=180)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _client() -> Any:
    from hai_tools.tracking import mlflow_client

    return mlflow_client()


def test_a_training_run_logs_to_the_local_sqlite_store_by_default(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path, hai_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_NAME"):
        monkeypatch.delenv(name, raising=False)
    out = _train(tiny_model_dir, tmp_path / "tracked-local")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{hai_home / 'mlflow' / 'mlflow.db'}"
    manifest = verify_artifact(out, kind="adapter")
    client = _client()
    experiment = client.get_experiment_by_name("hai-tools-training")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`hai.manifest_hash` = '{manifest.content_hash}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["hai.lora_r"] == str(manifest.config["lora_r"])
    # transformers' callback: the loss at every logging step (1 of 2), and the run's training loss their mean
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    assert run.data.metrics["train_loss"] == pytest.approx(sum(m.value for m in losses) / 2, rel=1e-6)
    assert run.data.metrics["final.train_loss"] == pytest.approx(manifest.metrics["train_loss"])
    assert run.data.metrics["final.eval_loss"] == pytest.approx(manifest.metrics["eval_loss"])
    assert run.data.tags["hai.dataset_hash"] == manifest.inputs[0].hash
    assert run.info.status == "FINISHED"
    # artifacts beside the store under the home folder, not in the folder the process happened to run in
    assert run.info.artifact_uri.startswith((hai_home / "mlflow" / "artifacts").as_uri())
    assert not (ROOT / "mlruns").exists()
    downloaded = Path(client.download_artifacts(run.info.run_id, "adapter", str(tmp_path / "dl")))
    assert (downloaded / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


def test_an_unreachable_tracking_server_stops_training_before_anything_is_written(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(
        ConfigError, match=r"MLflow tracking at http://127\.0\.0\.1:\d+ is not usable"
    ) as info:
        _train(tiny_model_dir, tmp_path / "never")
    assert "secret" not in str(info.value)
    assert not (tmp_path / "never").exists()


def test_run_logged_and_release_registered_on_a_tracking_server(
    mlflow_server: str,
    tiny_model_dir: Path,
    merged_tiny: Path,
    signed: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from governance.__main__ import main
    from governance.mlflow_registry import RegistryEvidenceInvalid, download_version, verify_downloaded

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_RUN_NAME", raising=False)
    out = _train(tiny_model_dir, tmp_path / "tracked-remote")
    manifest = verify_artifact(out, kind="adapter")
    client = _client()
    runs = client.search_runs(
        [client.get_experiment_by_name("hai-tools-training").experiment_id],
        f"tags.`hai.manifest_hash` = '{manifest.content_hash}'",
    )
    assert len(runs) == 1 and runs[0].data.metrics["final.train_loss"] == pytest.approx(
        manifest.metrics["train_loss"]
    )

    base = signed["base"]
    release = tmp_path / "release"
    args = [
        "release",
        str(merged_tiny),
        "--report",
        str(signed["report"]),
        "--policy",
        str(base / "policy.yaml"),
        "--key",
        str(base / "keys" / "release.key"),
        "--output_dir",
        str(release),
        "--release_id",
        "tiny-mlflow",
        "--mlflow",
    ]
    assert main(args) == 0
    versions = client.search_model_versions("name = 'tiny-mlflow'")
    assert len(versions) == 1
    version = versions[0]
    release_manifest = verify_artifact(release, kind="release")
    assert version.tags["hai.gate"] == "passed"
    assert version.tags["hai.release_id"] == "tiny-mlflow"
    assert version.tags["hai.manifest_hash"] == release_manifest.content_hash

    evidence = download_version("tiny-mlflow", version.version, tmp_path / "evidence")
    verified = verify_downloaded(evidence, signed["pub"])
    assert verified.content_hash == release_manifest.content_hash
    (evidence / "gate.json").write_text((evidence / "gate.json").read_text().replace("true", "false", 1))
    with pytest.raises(RegistryEvidenceInvalid, match=r"gate\.json: does not match the signed manifest"):
        verify_downloaded(evidence, signed["pub"])
    from hai_tools.keys import keygen

    _, other = keygen(tmp_path / "other")
    with pytest.raises(RegistryEvidenceInvalid, match="signature does not verify"):
        verify_downloaded(evidence, other)
