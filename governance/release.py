"""Signed releases: a gate-passing merged model bundled with its model card, eval report, gate result and
lineage into a release folder whose manifest is signed with an ed25519 key. Loaders (the MCP server) verify
the signature against a trusted public key, then every hash down the chain.

    python -m governance keygen --out keys/release            # keys/release.key (private), keys/release.pub
    python -m governance release out/merged/screening-lora --report out/evals/screening-lora \
        --policy configs/gate_lenient.yaml --key keys/release.key --output_dir out/releases/screening-lora
    python -m governance verify out/releases/screening-lora --public_key keys/release.pub
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evals.gate import apply_gate, load_policy
from evals.report import EvalReport
from governance.card import render_model_card
from governance.task import load_task
from hai_tools.chain import verify_chain
from hai_tools.errors import HaiError, ManifestError
from hai_tools.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    verify_artifact,
    write_manifest,
)


class ReleaseRefused(HaiError):
    """The release was not written: the gate failed or an input does not verify."""


def keygen(prefix: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseRefused(f"{path} is not an ed25519 private key")
    return key


def _load_public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError(f"{path} is not an ed25519 public key")
    return key


PARITY_KEYS = ("greedy_exact", "top1_agreement", "min_cosine", "mean_cosine", "size_ratio_to_fp32")


def export_entries(
    exports: list[Path], merged: Any
) -> tuple[list[ArtifactInput], list[Any], list[dict[str, Any]]]:
    """Verify each export (its whole chain) and check that a causal-LM export was made from the released merged
    model; returns the release inputs, the chain links and the parity figures the card shows."""
    inputs, links, rows = [], [], []
    for folder in exports:
        manifest = verify_artifact(folder)
        if not manifest.kind.startswith(("tflite_", "onnx_")):
            raise ReleaseRefused(f"{folder} is not an export (its manifest is a {manifest.kind})")
        chain = verify_chain(folder)
        if manifest.kind.endswith("causal_lm") and merged.content_hash not in {link.hash for link in chain}:
            raise ReleaseRefused(f"export {folder} was not made from the released merged model")
        inputs.append(
            ArtifactInput(
                kind=manifest.kind,
                name=manifest.name,
                hash=manifest.content_hash,
                uri=str(Path(folder).resolve()),
            )
        )
        links.extend(chain)
        variants = manifest.metrics.get("variants") or {"": manifest.metrics}
        parity = {
            variant: {k: v for k, v in figures.items() if k in PARITY_KEYS or k.startswith("parity_")}
            for variant, figures in variants.items()
            if isinstance(figures, dict)
        }
        rows.append(
            {"kind": manifest.kind, "name": manifest.name, "hash": manifest.content_hash, "parity": parity}
        )
    return inputs, links, rows


def create_release(
    merged_dir: Path,
    report_dir: Path,
    policy_path: Path,
    key_path: Path,
    output_dir: Path,
    release_id: str | None = None,
    task_spec: str | Path = "screening",
    exports: list[Path] | None = None,
) -> Path:
    task, task_text = load_task(task_spec)
    merged = verify_artifact(merged_dir, kind="merged_model")
    report_manifest = verify_artifact(report_dir, kind="eval_report")
    if report_manifest.inputs[0].hash != merged.content_hash:
        raise ReleaseRefused(f"the eval report in {report_dir} is not of the merged model in {merged_dir}")
    report = EvalReport.model_validate_json((report_dir / "report.json").read_text())
    gate = apply_gate(report, load_policy(policy_path))
    if not gate.passed:
        failing = "; ".join(f"{c.name} ({c.detail})" for c in gate.checks if c.counted and not c.passed)
        raise ReleaseRefused(f"gate failed, no release written: {failing}")
    lineage = verify_chain(merged_dir)
    export_inputs, export_links, export_rows = export_entries(exports or [], merged)
    lineage += export_links
    key = _load_private(key_path)
    name = release_id or f"{merged.name}-{merged.content_hash.removeprefix('sha256:')[:12]}"
    with atomic_folder(output_dir) as tmp:
        shutil.copy(report_dir / "report.json", tmp / "eval_report.json")
        shutil.copy(report_dir / "report.html", tmp / "eval_report.html")
        (tmp / "gate.json").write_text(gate.model_dump_json(indent=2) + "\n")
        (tmp / "lineage.json").write_text(
            json.dumps([link.model_dump() for link in lineage], indent=2) + "\n"
        )
        (tmp / "README.md").write_text(
            render_model_card(name, merged_dir, report, gate, lineage, task, export_rows)
        )
        (tmp / "policy.yaml").write_text(policy_path.read_text())
        (tmp / "task.yaml").write_text(task_text)
        manifest = write_manifest(
            tmp,
            Manifest(
                kind="release",
                name=name,
                inputs=[
                    ArtifactInput(
                        kind="merged_model",
                        name=merged.name,
                        hash=merged.content_hash,
                        uri=str(Path(merged_dir).resolve()),
                    ),
                    ArtifactInput(
                        kind="eval_report",
                        name=report_manifest.name,
                        hash=report_manifest.content_hash,
                        uri=str(Path(report_dir).resolve()),
                    ),
                    *export_inputs,
                ],
                config={"policy": str(policy_path)},
                code_version=code_version(),
                metrics={k: v.value for k, v in report.metrics.items()},
                extra={"gate_passed": True, "clinician_review_required": True},
            ),
        )
        signature = key.sign((tmp / MANIFEST_NAME).read_bytes())
        (tmp / SIGNATURE_NAME).write_text(base64.b64encode(signature).decode() + "\n")
        assert manifest.kind == "release"
    return Path(output_dir).resolve()


def verify_release(folder: Path, public_key: Path) -> list[Any]:
    """Signature over the manifest (trusted key), every file hash, then the whole chain of inputs."""
    folder = Path(folder)
    signature_path = folder / SIGNATURE_NAME
    if not signature_path.exists():
        raise ManifestError(f"{folder} is not signed (no {SIGNATURE_NAME})")
    try:
        _load_public(public_key).verify(
            base64.b64decode(signature_path.read_text().strip()), (folder / MANIFEST_NAME).read_bytes()
        )
    except (InvalidSignature, ValueError):
        raise ManifestError(f"{folder}: release signature does not verify with {public_key.name}") from None
    manifest = verify_artifact(folder, kind="release")
    links: list[Any] = []
    for item in manifest.inputs:
        if item.uri:
            links.extend(verify_chain(Path(item.uri)))
            if links and item.kind == "merged_model" and links[0].hash != item.hash:
                raise ManifestError(f"merged model at {item.uri} is not the one released")
    return links
