"""Backend parity report (`python -m evals parity`): the screening decisions of a release's fallback backends beside
the served model's, on the eval split. The reference is the merged model through the local backend (the
ReasonerSkill's `choose`, the procedure `screen` and `evals run` share); each other backend (the on-device TFLite
export) answers the same cases through its own `choose`, and the report gives, per backend, the share of cases
with the same label as the reference and the share with the true label, each with a Wilson interval, and the
largest difference in any label's probability. Case ids are not written (the test set may be sensitive): only
counts, and the hash of the case order.

A release carries the report (`governance release --backend_parity DIR`) when it names the exports it was
measured on, and a gate policy can set a floor (`backend_parity: {min_agreement: 0.9}`).

vLLM is not among the backends measured here: its `choose` needs the OpenAI API's logprobs, which the only
OpenAI-compatible server that runs on these machines (`transformers serve`) does not return.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evals.metrics import MetricCI, value_with_interval, wilson_ci
from hai_tools.demo_data import LABEL_CHOICES, LABELS
from hai_tools.errors import ConfigError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    verify_artifact,
    write_manifest,
)

PARITY_FILE = "backend_parity.json"
CARD_MARK = "## Backend parity (fallbacks against the served model)"


class BackendFigures(BaseModel):
    backend: str
    artifact: str = Field(description="content hash of what this backend served")
    variant: str | None = None
    agreement: MetricCI = Field(description="same label as the reference backend")
    accuracy: MetricCI = Field(description="the true label")
    unanswered: int = Field(
        0, description="cases the backend refused (e.g. a prompt over its on-device cache)"
    )
    max_probability_diff: float = Field(description="largest |P(label)| difference from the reference")


class BackendParity(BaseModel):
    merged_model: str
    merged_hash: str
    dataset: str
    dataset_hash: str
    split: str
    n: int
    cases_sha256: str = Field(
        description="sha256 of the case ids in the order scored (the ids are not written)"
    )
    reference: BackendFigures
    backends: dict[str, BackendFigures]


async def _decide(backend: Any, records: list[dict[str, Any]]) -> list[dict[str, float] | None]:
    """Each case's label probabilities, or None where the backend refuses the request (e.g. a prompt longer than
    an on-device cache): the fallback cannot serve that case, which counts against its agreement."""
    from skills.backends.base import RequestRejected

    choices = list(LABEL_CHOICES)
    answers: list[dict[str, float] | None] = []
    for record in records:
        try:
            probabilities = await backend.choose(list(record["prompt"]), choices)
        except RequestRejected:
            answers.append(None)
            continue
        answers.append({label: float(probabilities[c]) for label, c in zip(LABELS, choices, strict=True)})
    return answers


def _figures(
    name: str,
    artifact: str,
    answers: list[dict[str, float] | None],
    reference: list[dict[str, float] | None],
    truth: list[str],
    variant: str | None = None,
) -> BackendFigures:
    labels = [max(a, key=a.__getitem__) if a else None for a in answers]
    reference_labels = [max(a, key=a.__getitem__) if a else None for a in reference]
    n = len(labels)
    both = [(a, r) for a, r in zip(answers, reference, strict=True) if a and r]
    return BackendFigures(
        backend=name,
        artifact=artifact,
        variant=variant,
        agreement=wilson_ci(
            sum(a is not None and a == b for a, b in zip(labels, reference_labels, strict=True)), n
        ),
        accuracy=wilson_ci(sum(a == t for a, t in zip(labels, truth, strict=True)), n),
        unanswered=sum(a is None for a in answers),
        max_probability_diff=max((abs(a[k] - r[k]) for a, r in both for k in LABELS), default=0.0),
    )


def run_backend_parity(
    merged_dir: Path,
    dataset_ref: str,
    output_dir: Path,
    tflite_dirs: list[Path],
    split: str = "test",
    limit: int | None = None,
    variant: str = "int8",
) -> Path:
    """Score the eval split through the local backend (reference) and each TFLite export; write the report."""
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_split
    from skills.backends.local import LocalBackend
    from skills.backends.tflite import TFLiteBackend

    merged = verify_artifact(merged_dir, kind="merged_model")
    if not tflite_dirs:
        raise ConfigError("give at least one --tflite export to compare with the served model")
    exports = [(Path(d), verify_artifact(d)) for d in tflite_dirs]
    for folder, manifest in exports:
        if manifest.kind != "tflite_causal_lm":
            raise ConfigError(f"{folder} is a {manifest.kind}, not a TFLite reasoner (tflite_causal_lm)")
    record, records = load_split(open_registry(), dataset_ref, split, limit)
    truth = [str(r["label"]) for r in records]

    async def score() -> tuple[list[Any], dict[str, tuple[Path, list[Any], str]]]:
        local = LocalBackend(reasoner=str(Path(merged_dir).resolve()))
        reference = await _decide(local, records)
        await local.close()
        others = {}
        for folder, _ in exports:
            backend = TFLiteBackend(reasoner_dir=str(folder), variant=variant)
            served = backend.identity("generate").release or ""  # "tflite-<variant it loaded>"
            others[f"tflite:{folder.name}"] = (
                folder,
                await _decide(backend, records),
                served.removeprefix("tflite-"),
            )
            await backend.close()
        return reference, others

    reference, others = asyncio.run(score())
    hashes = {folder: manifest.content_hash for folder, manifest in exports}
    report = BackendParity(
        merged_model=merged.name,
        merged_hash=merged.content_hash,
        dataset=record.ref,
        dataset_hash=record.content_hash,
        split=split,
        n=len(records),
        cases_sha256=hashlib.sha256(
            json.dumps([str(r.get("case_id")) for r in records]).encode()
        ).hexdigest(),
        reference=_figures("local", merged.content_hash, reference, reference, truth),
        backends={
            name: _figures(
                name,
                hashes[folder],
                answers,
                reference,
                truth,
                served,
            )
            for name, (folder, answers, served) in others.items()
        },
    )
    with atomic_folder(output_dir) as tmp:
        (tmp / PARITY_FILE).write_text(report.model_dump_json(indent=2) + "\n")
        write_manifest(
            tmp,
            Manifest(
                kind="backend_parity",
                name=f"{merged.name}-backend-parity",
                inputs=[
                    ArtifactInput(
                        kind="merged_model",
                        name=merged.name,
                        hash=merged.content_hash,
                        uri=str(Path(merged_dir).resolve()),
                    ),
                    *[
                        ArtifactInput(kind=m.kind, name=m.name, hash=m.content_hash, uri=str(f.resolve()))
                        for f, m in exports
                    ],
                    ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash),
                ],
                config={"split": split, "limit": limit, "variant": variant},
                code_version=code_version(),
                metrics={name: f.agreement.value for name, f in report.backends.items()},
            ),
        )
    return Path(output_dir).resolve()


def load_parity(folder: Path) -> tuple[BackendParity, Manifest]:
    manifest = verify_artifact(folder, kind="backend_parity")
    return BackendParity.model_validate_json((Path(folder) / PARITY_FILE).read_text()), manifest


def parity_text(report: BackendParity) -> str:
    rows = "\n".join(
        f"| {f.backend}{f' ({f.variant})' if f.variant else ''} | {value_with_interval(f.agreement)} | {value_with_interval(f.accuracy)} | "
        f"{f.unanswered} | {f.max_probability_diff:.3f} |"
        for f in [report.reference, *report.backends.values()]
    )
    return (
        f"Screening decisions on `{report.dataset}` ({report.split}, {report.n} cases), each backend against the "
        "served model through the local backend; Wilson 95% intervals. vLLM is not measured here (its choice "
        "needs logprobs, which no server on the build machines returns).\n\n"
        "| backend | same label as served | true label | not served | max P difference |\n"
        "|---|---|---|---|---|\n" + rows + "\n"
    )
