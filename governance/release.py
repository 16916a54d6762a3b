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
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from evals.backend_parity import PARITY_FILE, load_parity
from evals.gate import apply_gate, load_policy
from evals.privacy import AUDIT_FILE, load_audit
from evals.report import EvalReport
from governance.card import render_model_card
from governance.task import load_task
from hai_tools.chain import ChainWalk
from hai_tools.errors import HaiError
from hai_tools.keys import keygen, load_private
from hai_tools.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactInput,
    Manifest,
    atomic_folder,
    canonical_json,
    code_version,
    content_hash,
    dump_json,
    verify_artifact,
    write_manifest,
)
from hai_tools.models import EMBEDDED_EMBEDDER, resolve_base_model, weight_files
from hai_tools.release import SERVING_KEY, VerifiedRelease, bundled_links, verify_release


class ReleaseRefused(HaiError):
    """The release was not written: the gate failed or an input does not verify."""


__all__ = [
    "ReleaseRefused",
    "VerifiedRelease",
    "bundled_links",
    "create_release",
    "keygen",
    "verify_release",
]


PARITY_KEYS = (
    "greedy_exact",
    "top1_agreement",
    "min_cosine",
    "mean_cosine",
    "size_ratio_to_fp32",
    "teacher_label_agreement",
    "teacher_token_agreement",
    "size_ratio_to_teacher",
)


def export_entries(
    exports: list[Path], merged: Any, walk: ChainWalk
) -> tuple[list[ArtifactInput], list[Any], list[dict[str, Any]]]:
    """Verify each export (its whole chain) and check that a causal-LM export was made from the released merged
    model; returns the release inputs, the chain links and the parity figures the card shows."""
    inputs, links, rows = [], [], []
    for folder in exports:
        manifest = verify_artifact(folder)
        if not manifest.kind.startswith(("tflite_", "onnx_")):
            raise ReleaseRefused(f"{folder} is not an export (its manifest is a {manifest.kind})")
        chain = walk.walk(folder)
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


def _copy_model(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))


def _bundle_report(source: Path, target: Path, test_set_sensitive: bool) -> None:
    """The eval report a release carries: without its per-record predictions when the policy says the test set
    is sensitive (their count and hash stay, so the report's manifest still names what was withheld)."""
    if not test_set_sensitive:
        shutil.copy(source, target)
        return
    report = json.loads(source.read_text())
    predictions = report.get("predictions") or []
    report["predictions"] = []
    report["predictions_withheld"] = {
        "count": len(predictions),
        "sha256": hashlib.sha256(canonical_json(predictions)).hexdigest(),
        "reason": "the release policy marks the test set sensitive (test_set_sensitive: true)",
    }
    target.write_text(json.dumps(report, indent=2) + "\n")


def create_release(
    merged_dir: Path,
    report_dir: Path,
    policy_path: Path,
    key_path: Path,
    output_dir: Path,
    release_id: str | None = None,
    task_spec: str | Path = "screening",
    exports: list[Path] | None = None,
    embedder: str | None = EMBEDDED_EMBEDDER,
    guard: Path | None = None,
    privacy_audit: Path | None = None,
    backend_parity: Path | None = None,
) -> Path:
    """A release is a serving bundle: the gate-passing merged model, the embedder and the edge exports the server
    loads (copied under `models/`), the card, eval report, gate result, lineage, and the manifest of every link of
    their chains (under `chain/`), all listed with their hashes in one manifest signed with `key_path`."""
    task, task_text = load_task(task_spec)
    merged = verify_artifact(merged_dir, kind="merged_model")
    image_text = merged.extra.get("modality") == "image_text"
    if image_text != (task.hf_task_type == "image-text-to-text"):
        raise ReleaseRefused(
            f"{merged.name} is {'an image-text' if image_text else 'a text'} model but task {task.name} is "
            f"{task.hf_task_type}: release it with the task card it was trained for (--task)"
        )
    role = "radiology" if image_text else "reasoner"  # what the server serves it as
    report_manifest = verify_artifact(report_dir, kind="eval_report")
    if report_manifest.inputs[0].hash != merged.content_hash:
        raise ReleaseRefused(f"the eval report in {report_dir} is not of the merged model in {merged_dir}")
    report = EvalReport.model_validate_json((report_dir / "report.json").read_text())
    policy = load_policy(policy_path)
    audit = audit_manifest = None
    if privacy_audit is not None:
        audit, audit_manifest = load_audit(privacy_audit)
        if audit.adapter_hash != merged.input("adapter").hash:
            raise ReleaseRefused(
                f"the privacy audit in {privacy_audit} is of adapter {audit.adapter}, not of the adapter merged "
                f"into {merged_dir}"
            )
    parity = parity_manifest = None
    if backend_parity is not None:
        parity, parity_manifest = load_parity(backend_parity)
        if parity.merged_hash != merged.content_hash:
            raise ReleaseRefused(
                f"the backend parity report in {backend_parity} is of {parity.merged_model}, not of the merged "
                f"model in {merged_dir}"
            )
    gate = apply_gate(report, policy, audit, parity)
    if not gate.passed:
        failing = "; ".join(f"{c.name} ({c.detail})" for c in gate.checks if c.counted and not c.passed)
        raise ReleaseRefused(f"gate failed, no release written: {failing}")
    walk = ChainWalk()  # one walk: links shared by several roots are hashed once
    lineage = walk.walk(merged_dir)
    export_inputs, export_links, export_rows = export_entries(exports or [], merged, walk)
    if parity is not None:  # the exports' hashes as export_entries verified them (each hashed once)
        carried = {item.hash for item in export_inputs}
        for name, figures in parity.backends.items():
            if figures.artifact not in carried:
                raise ReleaseRefused(
                    f"the backend parity report measured {name} ({figures.artifact[:19]}), an export this "
                    "release does not carry (--export)"
                )
    lineage += export_links
    walk.walk(report_dir)
    if backend_parity is not None:
        walk.walk(backend_parity)
    if privacy_audit is not None:
        walk.walk(privacy_audit)  # the audit, its adapter and dataset: bundled links like the report's
    guard_manifest = None
    if guard is not None:
        guard_manifest = verify_artifact(guard, kind="guard")
        walk.walk(guard)
    tested = report.red_team.guard_manifest_hash if report.red_team else None
    served = guard_manifest.content_hash if guard_manifest else None
    if tested is not None and tested != served:
        raise ReleaseRefused(
            "the guard to be served is not the one the red-team evidence was measured with "
            f"(report: {tested[:19]}, --guard: {served[:19] if served else 'none'})"
        )
    chain = walk.documents
    key = load_private(key_path)
    name = release_id or f"{merged.name}-{merged.content_hash.removeprefix('sha256:')[:12]}"
    serving: dict[str, Any] = {
        role: {"path": f"models/{role}", "kind": "merged_model", "hash": merged.content_hash}
    }
    inputs = [
        ArtifactInput(kind="merged_model", name=merged.name, hash=merged.content_hash, uri=f"models/{role}"),
        ArtifactInput(kind="eval_report", name=report_manifest.name, hash=report_manifest.content_hash),
    ]
    with atomic_folder(output_dir) as tmp:
        _copy_model(Path(merged_dir), tmp / "models" / role)
        if embedder:
            ref = resolve_base_model(embedder)
            _copy_model(Path(ref.path), tmp / "models" / "embedder")
            files = weight_files(tmp / "models" / "embedder")
            if content_hash(files) != ref.identity:
                raise ReleaseRefused(f"embedder {embedder} changed while it was copied into the release")
            serving["embedder"] = {"path": "models/embedder", "kind": "embedder", "hash": ref.identity}
            inputs.append(
                ArtifactInput(kind="embedder", name=ref.id, hash=ref.identity, uri="models/embedder")
            )
            chain[ref.identity] = {"type": "files", "document": files}
        if guard is not None and guard_manifest is not None:
            _copy_model(Path(guard), tmp / "models" / "guard")
            serving["guard"] = {"path": "models/guard", "kind": "guard", "hash": guard_manifest.content_hash}
            inputs.append(
                ArtifactInput(
                    kind="guard",
                    name=guard_manifest.name,
                    hash=guard_manifest.content_hash,
                    uri="models/guard",
                )
            )
        for item in export_inputs:
            where = f"models/edge/{item.kind}"
            _copy_model(Path(str(item.uri)), tmp / where)
            serving[item.kind] = {"path": where, "kind": item.kind, "hash": item.hash}
            inputs.append(item.model_copy(update={"uri": where}))
        (tmp / "chain").mkdir()
        for link_hash, document in sorted(chain.items()):
            (tmp / "chain" / f"{link_hash.removeprefix('sha256:')}.json").write_text(dump_json(document))
        _bundle_report(report_dir / "report.json", tmp / "eval_report.json", policy.test_set_sensitive)
        shutil.copy(report_dir / "report.html", tmp / "eval_report.html")
        if audit is not None and audit_manifest is not None and privacy_audit is not None:
            shutil.copy(Path(privacy_audit) / AUDIT_FILE, tmp / AUDIT_FILE)
            inputs.append(
                ArtifactInput(
                    kind="privacy_audit", name=audit_manifest.name, hash=audit_manifest.content_hash
                )
            )
        if parity is not None and parity_manifest is not None and backend_parity is not None:
            shutil.copy(Path(backend_parity) / PARITY_FILE, tmp / PARITY_FILE)
            inputs.append(
                ArtifactInput(
                    kind="backend_parity", name=parity_manifest.name, hash=parity_manifest.content_hash
                )
            )
        (tmp / "gate.json").write_text(gate.model_dump_json(indent=2) + "\n")
        (tmp / "lineage.json").write_text(
            json.dumps([link.model_dump() for link in lineage], indent=2) + "\n"
        )
        (tmp / "README.md").write_text(
            render_model_card(name, merged_dir, report, gate, lineage, task, export_rows, audit, parity)
        )
        (tmp / "policy.yaml").write_text(policy_path.read_text())
        (tmp / "task.yaml").write_text(task_text)
        write_manifest(
            tmp,
            Manifest(
                kind="release",
                name=name,
                inputs=inputs,
                config={"policy": policy_path.name},
                code_version=code_version(),
                metrics={k: v.value for k, v in report.metrics.items()},
                extra={SERVING_KEY: serving, "gate_passed": True, "clinician_review_required": True},
            ),
        )
        signature = key.sign((tmp / MANIFEST_NAME).read_bytes())
        (tmp / SIGNATURE_NAME).write_text(base64.b64encode(signature).decode() + "\n")
    return Path(output_dir).resolve()
