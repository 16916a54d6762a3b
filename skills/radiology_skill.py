"""RadiologySkill: one image -> the task's reading, for a clinician to review. The image is decoded within the
server's bounds and DICOM is de-identified first (skills/images.py); the model is read by the same procedure the
evaluation used (hai_tools.radiology_reading). Bone age comes with an interval of +- the model's validated MAE
(from its evaluation report, checked to be of this model); ROP and fracture with P(yes), the threshold and the
finding at it. The audit records the task, the decoded pixels' hash and the outcome: never the image."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

from hai_tools.audit import AuditLog
from hai_tools.errors import ConfigError
from skills.contracts import ModelIdentity, RadiographRequest, RadiographResult
from skills.images import decode_image

log = logging.getLogger("skills")


def _identity(folder: Path) -> tuple[ModelIdentity, str | None]:
    """The model's identity and its manifest hash (None for a folder without a manifest: development)."""
    from hai_tools.manifest import MANIFEST_NAME, verify_artifact
    from hai_tools.models import folder_identity

    if (folder / MANIFEST_NAME).exists():
        manifest = verify_artifact(folder)
        return ModelIdentity(base=manifest.name, manifest_hash=manifest.content_hash), manifest.content_hash
    return ModelIdentity(base=folder.name, manifest_hash=folder_identity(folder)), None


def validated_mae(report_dir: Path, model_hash: str | None) -> float | None:
    """The bone-age MAE of an evaluation report of this model (its manifest verified, its model input checked)."""
    from hai_tools.manifest import verify_artifact

    manifest = verify_artifact(report_dir)
    if manifest.kind != "eval_report":
        raise ConfigError(
            f"radiology.eval_report {report_dir} is a {manifest.kind}, not an evaluation report"
        )
    if model_hash is None or model_hash not in {i.hash for i in manifest.inputs}:
        raise ConfigError(
            f"radiology.eval_report {report_dir.name} is not an evaluation of the configured model "
            "(its inputs do not name the model's manifest)"
        )
    return _report_mae(report_dir / "report.json", report_dir.name)


def _report_mae(report_path: Path, name: str) -> float | None:
    """bone_age_mae of an evaluation report (None when the evaluation had no bone-age cases or none parsed)."""
    report = json.loads(report_path.read_text())
    if "bone_age_mae" not in (report.get("metrics") or {}):
        raise ConfigError(f"the evaluation report of {name} has no bone_age_mae")
    value = report["metrics"]["bone_age_mae"].get("value")
    return float(value) if isinstance(value, int | float) else None


class RadiologySkill:
    def __init__(self, settings: Any, audit: AuditLog, release_folder: Path | None = None) -> None:
        """`release_folder`: the verified signed release the model comes from (its eval report gives the MAE)."""
        from hai_tools.deid import DeidPolicy

        self.settings = settings
        self.audit = audit
        if not settings.model:
            raise ConfigError("radiology needs a model: radiology.model, or a signed radiology release")
        self.folder = Path(settings.model)
        if not self.folder.is_dir():
            raise ConfigError(f"radiology.model {settings.model} is not a folder")
        self.identity, manifest_hash = _identity(self.folder)
        self.mae: float | None = None
        if release_folder is not None:
            self.mae = _report_mae(release_folder / "eval_report.json", release_folder.name)
        elif settings.eval_report:
            self.mae = validated_mae(Path(settings.eval_report), manifest_hash)
        self.policy = DeidPolicy(
            allow_burned_in=settings.allow_burned_in, burned_in_reason=settings.burned_in_reason
        )
        if settings.allow_burned_in:
            log.warning("radiology: DICOMs with burned-in text are read (%s)", settings.burned_in_reason)
        self._lock = threading.Lock()
        self._reader: tuple[Any, Any] | None = None

    def load(self) -> None:
        from hai_tools.radiology_reading import load_reader

        with self._lock:
            if self._reader is None:
                self._reader = load_reader(self.folder)

    @property
    def loaded(self) -> bool:
        return self._reader is not None

    def _read_sync(self, task: str, image: Any) -> dict[str, Any]:
        from hai_tools.radiology_reading import read_image

        self.load()
        with self._lock:
            processor, model = self._reader  # type: ignore[misc]
            return read_image(processor, model, task, image)

    async def read(self, request: RadiographRequest) -> RadiographResult:
        settings = self.settings
        call = self.audit.start("read_radiograph", {"task": request.task, "media_type": request.media_type})
        try:
            decoded = decode_image(
                request.image_base64,
                request.media_type,
                settings.max_image_bytes,
                settings.max_pixels,
                self.policy,
            )
            call.request = {"task": request.task, "image_sha256": decoded.sha256}
            reading = await asyncio.to_thread(self._read_sync, request.task, decoded.image)
        except Exception as exc:
            call.done("error", detail=type(exc).__name__)
            raise
        fields: dict[str, Any] = {}
        if request.task == "bone_age":
            months = reading["prediction"]
            fields |= {"bone_age_months": months, "answer_text": reading["answer"]}
            if months is None:
                fields["note"] = "the model's answer holds no number of months"
            elif self.mae is None:
                fields["note"] = "no evaluation report configured: no interval"
            else:
                fields["bone_age_interval_months"] = (max(0.0, months - self.mae), months + self.mae)
        else:
            threshold = settings.thresholds[request.task]
            fields |= {
                "probability": reading["p_yes"],
                "threshold": threshold,
                "finding": reading["p_yes"] >= threshold,
            }
        call.done("ok", self.identity.model_dump(), "local")
        return RadiographResult(
            task=request.task,
            model=self.identity,
            backend="local",
            audit_id=call.audit_id,
            image=decoded.describe(),
            **fields,
        )
