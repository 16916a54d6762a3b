"""Membership-inference audit of an adapter (`python -m evals privacy`): can an attacker with the weights tell the
records it was trained on (members: the training split) from records of the same population it never saw
(non-members: a held-out split)?

Two attacks, each scored on every member and non-member record:
- **loss threshold** (Yeom et al. 2018): a record's score is minus its loss under the adapter (each record's mean
  token loss over its own completion, as the trainer computes it).
- **LiRA, offline** (Carlini et al. 2022, with reference models): K reference adapters are trained with the
  target's own recipe (its config from the manifest, DP included) on random halves of the pool (members and
  non-members together), each record in exactly K/2 of them. A record's score is how much lower its loss under
  the target is than under the references that did not train on it, in units of the references' spread (one
  global variance, as the paper advises for few references): per-record difficulty is calibrated away.

Figures: attack AUC and TPR at 1% FPR, each with a bootstrap CI (whole patients resampled when the dataset has a
patient id column). 0.5 AUC is chance; a DP adapter's CI should contain it. The audit writes `privacy_audit.json`
with a manifest naming the adapter and dataset hashes; `evals gate --privacy_audit` and `governance release
--privacy_audit` check it against the policy's caps and carry it onto the release card. The adapter's own card
is part of its hashed content (editing it would change the adapter's identity), so the audit folder carries the
card's addendum (`README.md`, naming the adapter by its hash).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from evals.metrics import MetricCI, Sampling, auc, bootstrap_many, value_with_interval
from hai_tools.errors import ConfigError, DatasetError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    verify_artifact,
    write_manifest,
)

if TYPE_CHECKING:
    from hai_tools.models import BaseModelRef

log = logging.getLogger("evals")

AUDIT_FILE = "privacy_audit.json"
ATTACKS = ("loss_threshold", "lira_offline")
FIGURES = tuple(f"{attack}_{figure}" for attack in ATTACKS for figure in ("auc", "tpr_at_1pct_fpr"))
FPR = 0.01
CARD_MARK = "## Membership-inference audit"


class PrivacyAudit(BaseModel):
    adapter: str
    adapter_hash: str
    dataset: str
    dataset_hash: str
    members_split: str
    non_members_split: str
    n_members: int
    n_non_members: int
    n_patients: int | None = Field(None, description="patients resampled (cluster bootstrap); None: records")
    reference_models: int
    statistic: str = "minus the record's mean completion-token loss"
    differential_privacy: dict[str, Any] | None = Field(None, description="the adapter's DP record, if any")
    figures: dict[str, MetricCI]


def tpr_at_fpr(membership: np.ndarray, score: np.ndarray, fpr: float = FPR) -> float:
    """The share of members scored above a threshold that at most `fpr` of the non-members exceed."""
    non = np.sort(score[membership == 0])[::-1]
    members = score[membership == 1]
    if not len(non) or not len(members):
        return float("nan")
    allowed = int(np.floor(fpr * len(non)))  # false positives the threshold may let through
    threshold = non[allowed] if allowed < len(non) else -np.inf
    return float(np.mean(members > threshold))


def attack_figures(
    name: str, membership: np.ndarray, score: np.ndarray, sampling: Sampling
) -> dict[str, MetricCI]:
    """`name`_auc and `name`_tpr_at_1pct_fpr with their CIs, from one set of resamples."""

    def both(y: np.ndarray, s: np.ndarray) -> np.ndarray:
        if len(np.unique(y)) < 2:
            return np.asarray([np.nan, np.nan])
        return np.asarray([auc(y, s), tpr_at_fpr(y, s)])

    return bootstrap_many(both, [f"{name}_auc", f"{name}_tpr_at_1pct_fpr"], (membership, score), sampling)


def check_reference_count(k: int) -> None:
    if k < 2 or k % 2:
        raise ConfigError(f"--reference_models must be 0 (no LiRA) or an even number >= 2 (got {k})")


def reference_assignment(n: int, k: int, seed: int) -> np.ndarray:
    """(k, n) booleans: record j trains reference i; every record is in exactly k/2 references."""
    check_reference_count(k)
    rng = np.random.default_rng(seed)
    assignment = np.zeros((k, n), dtype=bool)
    for j in range(n):
        assignment[rng.choice(k, k // 2, replace=False), j] = True
    return assignment


def lira_offline(
    target_losses: np.ndarray, reference_losses: np.ndarray, trained_on: np.ndarray
) -> np.ndarray:
    """Each record's (mean OUT-reference loss - target loss) / the OUT losses' global spread: high = member."""
    out = ~trained_on
    counts = out.sum(axis=0)
    if (counts == 0).any():
        raise ConfigError("a record is in every reference model: LiRA offline needs OUT references for each")
    mean_out = np.where(out, reference_losses, 0).sum(axis=0) / counts
    residuals = (reference_losses - mean_out)[out]
    spread = float(np.std(residuals)) if len(residuals) > counts.size else 0.0
    if spread == 0.0:  # one OUT reference per record: the spread across records' OUT losses stands in
        spread = float(np.std(mean_out)) or 1.0
    return (mean_out - target_losses) / spread


def record_losses(
    base: BaseModelRef, adapter: Path | None, records: list[dict[str, Any]], max_length: int
) -> np.ndarray:
    """Each record's mean completion-token loss under the base model with `adapter` (or the base alone)."""
    import torch
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM

    from trainer.dp import _tensors, _tokenize, per_example_losses
    from trainer.train import _load_tokenizer

    tokenizer = _load_tokenizer(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    data = _tensors(_tokenize(records, tokenizer, max_length), tokenizer.pad_token_id)
    losses: list[float] = []
    with torch.no_grad():
        for start in range(0, len(data), 64):
            ids, mask, labels = data[start : start + 64]
            losses += per_example_losses(model, ids, mask, labels).tolist()
    return np.asarray(losses)


def _records(split: Any, name: str) -> list[dict[str, Any]]:
    missing = [c for c in ("prompt", "completion") if c not in split.column_names]
    if missing:
        raise DatasetError(f"split '{name}' lacks column(s) {missing} (prompt/completion records)")
    return [dict(row) for row in split]


def _train_references(
    manifest: Manifest,
    pool: list[dict[str, Any]],
    patient_column: str | None,
    assignment: np.ndarray,
    scratch: Path,
) -> list[Path]:
    """K adapters trained with the target's recipe on their halves of the pool, in a scratch registry."""
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import register_dataset
    from trainer.config import TrainConfig
    from trainer.train import run_dir_for, train

    store = open_registry(str(scratch / "registry.sqlite"))
    recipe = dict(manifest.config)
    adapters = []
    for i, row in enumerate(assignment):
        data = scratch / f"reference-{i}.jsonl"
        keep = ("prompt", "completion", *([patient_column] if patient_column else []))
        data.write_text(
            "".join(json.dumps({k: pool[j][k] for k in keep}) + "\n" for j in np.flatnonzero(row))
        )
        ref = f"audit-reference-{i}@1"
        register_dataset(
            store,
            ref,
            files={"train": data},
            license="audit-scratch",
            deid_attestation="a subset of the audited dataset (scratch copy, deleted after the audit)",
            patient_id_column=patient_column,
        )
        config = TrainConfig.model_validate(
            recipe
            | {
                "dataset": ref,
                "adapter_name": f"{manifest.name}-reference-{i}",
                "output_dir": str(scratch / f"reference-{i}"),
                "seed": int(recipe.get("seed", 0)) + 1 + i,
                "resume": False,
                "report_to": ["none"],
            }
        )
        log.info("reference model %d of %d: %d records", i + 1, len(assignment), int(row.sum()))
        try:
            adapters.append(train(config, store))
        finally:  # its checkpoints and log hold a model of audited records: nothing of it outlives the audit
            shutil.rmtree(run_dir_for(config), ignore_errors=True)
    return adapters


def run_privacy_audit(
    adapter_dir: Path,
    dataset: str,
    output_dir: Path,
    members_split: str = "train",
    non_members_split: str = "test",
    reference_models: int = 4,
    n_resamples: int = 1000,
    limit: int | None = None,
    seed: int = 0,
) -> Path:
    """Score both attacks on members and non-members, write `privacy_audit.json` and its manifest."""
    from hai_tools.models import resolve_base_model
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_registered

    if reference_models:
        check_reference_count(reference_models)  # before anything is loaded
    adapter = verify_artifact(adapter_dir, kind="adapter")
    recipe = adapter.config
    base = resolve_base_model(str(recipe["base_model_id"]))
    trained_base = next((i.hash for i in adapter.inputs if i.kind == "base_model"), None)
    if trained_base != base.identity:
        raise ConfigError(f"the base model {base.id} is not the one {adapter.name} was trained on")
    record, splits = load_registered(open_registry(), dataset)
    trained_data = next((i.hash for i in adapter.inputs if i.kind == "dataset"), None)
    if trained_data != record.content_hash:
        raise ConfigError(
            f"{adapter.name} was not trained on {record.ref}: the audit's members must be its training records"
        )
    for split in (members_split, non_members_split):
        if split not in splits:
            raise DatasetError(f"{record.ref} has no '{split}' split (has: {', '.join(splits)})")
    members = _records(splits[members_split], members_split)
    if recipe.get("max_train_samples"):
        members = members[: int(recipe["max_train_samples"])]  # what the trainer actually saw
    non_members = _records(splits[non_members_split], non_members_split)
    if limit:
        members, non_members = members[:limit], non_members[:limit]
    if min(len(members), len(non_members)) < 2:
        raise DatasetError("the audit needs at least 2 member and 2 non-member records")
    pool = members + non_members
    membership = np.asarray([1] * len(members) + [0] * len(non_members))
    column = record.patient_id_column
    clusters = np.asarray([str(r.get(column)) for r in pool]) if column else None
    sampling = Sampling(n_resamples=n_resamples, seed=seed, method="percentile", clusters=clusters)
    max_length = int(recipe.get("max_length", 512))

    log.info("privacy audit of %s: %d members, %d non-members", adapter.name, len(members), len(non_members))
    target = record_losses(base, adapter_dir, pool, max_length)
    figures = attack_figures("loss_threshold", membership, -target, sampling)
    if reference_models:  # 0: the loss-threshold attack only (no reference training)
        assignment = reference_assignment(len(pool), reference_models, seed)
        with tempfile.TemporaryDirectory(prefix="hai-audit-") as scratch:
            references = _train_references(adapter, pool, column, assignment, Path(scratch))
            reference_losses = np.stack([record_losses(base, ref, pool, max_length) for ref in references])
        figures |= attack_figures(
            "lira_offline", membership, lira_offline(target, reference_losses, assignment), sampling
        )
    audit = PrivacyAudit(
        adapter=adapter.name,
        adapter_hash=adapter.content_hash,
        dataset=record.ref,
        dataset_hash=record.content_hash,
        members_split=members_split,
        non_members_split=non_members_split,
        n_members=len(members),
        n_non_members=len(non_members),
        n_patients=len(set(clusters.tolist())) if clusters is not None else None,
        reference_models=reference_models,
        differential_privacy=adapter.extra.get("differential_privacy"),
        figures=figures,
    )
    with atomic_folder(output_dir) as tmp:
        (tmp / AUDIT_FILE).write_text(audit.model_dump_json(indent=2) + "\n")
        (tmp / "README.md").write_text(
            f"# Privacy audit of adapter {adapter.name}\n\nAddendum to the adapter card of `{adapter.name}` "
            f"(content hash `{adapter.content_hash}`).\n\n{CARD_MARK}\n{audit_text(audit)}"
        )
        write_manifest(
            tmp,
            Manifest(
                kind="privacy_audit",
                name=f"{adapter.name}-privacy-audit",
                inputs=[
                    ArtifactInput(
                        kind="adapter",
                        name=adapter.name,
                        hash=adapter.content_hash,
                        uri=str(Path(adapter_dir).resolve()),
                    ),
                    ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash),
                ],
                config={
                    "members_split": members_split,
                    "non_members_split": non_members_split,
                    "reference_models": reference_models,
                    "n_resamples": n_resamples,
                    "limit": limit,
                    "seed": seed,
                },
                code_version=code_version(),
                metrics={k: v.value for k, v in figures.items()},
            ),
        )
    return Path(output_dir).resolve()


def load_audit(folder: Path) -> tuple[PrivacyAudit, Manifest]:
    """A privacy audit, after its manifest's hashes are re-checked."""
    manifest = verify_artifact(folder, kind="privacy_audit")
    return PrivacyAudit.model_validate_json((Path(folder) / AUDIT_FILE).read_text()), manifest


def audit_text(audit: PrivacyAudit) -> str:
    """The audit as a card section's body (Markdown)."""

    if audit.reference_models == 0:
        references = "no reference models (the loss-threshold attack only)"
    else:
        references = f"{audit.reference_models} reference models for LiRA"
    rows = "\n".join(
        f"| {attack.replace('_', ' ')} | {value_with_interval(audit.figures[f'{attack}_auc'])} | "
        f"{value_with_interval(audit.figures[f'{attack}_tpr_at_1pct_fpr'])} |"
        for attack in ATTACKS
        if f"{attack}_auc" in audit.figures
    )
    unit = f"{audit.n_patients} patients resampled" if audit.n_patients else "records resampled"
    return (
        f"Membership inference on `{audit.dataset}`: {audit.n_members} training records ({audit.members_split}) "
        f"against {audit.n_non_members} held-out records ({audit.non_members_split}), {references}; "
        f"95% bootstrap CIs ({unit}). AUC 0.5 is chance.\n\n"
        "| attack | AUC | TPR at 1% FPR |\n|---|---|---|\n" + rows + "\n"
    )
