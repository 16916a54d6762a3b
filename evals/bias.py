"""Bias audit: per-subgroup metrics with bootstrap CIs, between-group gaps (difference and ratio) with CIs of
the gap itself, and fairlearn's equalized-odds difference. A subgroup smaller than `min_group_size` is
reported as too small and left out of the gaps; a metric undefined in a subgroup (one class) is reported with
the group's name, and its gap is undefined: nothing is silently averaged in.

    python -m evals run ...   (the audit is part of every report)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fairlearn.metrics import equalized_odds_difference
from pydantic import BaseModel, Field

from evals.metrics import MetricCI, Sampling, auc, bootstrap_many, check_arrays


class SubgroupResult(BaseModel):
    group: str
    n: int
    n_patients: int | None = None
    sufficient: bool
    metrics: dict[str, MetricCI]
    undefined: list[str] = Field(default_factory=list, description="metrics undefined in this group")


class AttributeAudit(BaseModel):
    attribute: str
    groups: list[SubgroupResult]
    difference: dict[str, MetricCI] = Field(description="max - min over the reportable groups, with its CI")
    ratio: dict[str, MetricCI] = Field(description="min / max over the reportable groups, with its CI")
    equalized_odds_difference: float | None
    insufficient_groups: list[str] = Field(description="groups below min_group_size")
    undefined: dict[str, list[str]] = Field(
        default_factory=dict, description="metric -> reportable groups where it is undefined (one class)"
    )


LABEL_METRICS = ("sensitivity", "specificity", "selection_rate")
METRIC_NAMES = (*LABEL_METRICS, "auc")


def _per_group(include_auc: bool, n_groups: int) -> Callable[..., np.ndarray]:
    """(y, pred, score, group index) -> a (groups x metrics) table from one pass: confusion counts per group
    by bincount, AUC per group where asked; NaN where a group has no row of the class a metric needs."""

    def table(y: np.ndarray, pred: np.ndarray, score: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        counts = np.bincount(gidx * 4 + y * 2 + pred, minlength=4 * n_groups).reshape(n_groups, 4)
        tn, fp, fn, tp = counts.T.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns = [tp / (tp + fn), tn / (tn + fp), (tp + fp) / counts.sum(axis=1)]
        if include_auc:
            columns.append(np.asarray([auc(y[gidx == g], score[gidx == g]) for g in range(n_groups)]))
        return np.stack(columns, axis=1)

    return table


def group_intervals(
    y: np.ndarray,
    pred: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    sampling: Sampling,
    include_auc: bool = True,
) -> tuple[dict[str, dict[str, MetricCI]], dict[str, MetricCI], dict[str, MetricCI]]:
    """Per-group metrics and the between-group difference (max - min) and ratio (min / max) of each, all with
    CIs from the same resamples of the whole frame (rows or whole patients), the scheme fairlearn's
    MetricFrame bootstrap uses. A gap is undefined in a resample where any group's value is."""
    names = sorted(np.unique(groups))
    gidx = np.searchsorted(names, groups)
    metrics = METRIC_NAMES if include_auc else LABEL_METRICS
    table = _per_group(include_auc, len(names))

    def vector(y: np.ndarray, pred: np.ndarray, score: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        values = table(y, pred, score, gidx)
        high, low = values.max(axis=0), values.min(axis=0)  # NaN wherever a group is undefined
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(high > 0, low / high, np.nan)
        gaps = [high - low, ratio] if len(names) > 1 else []
        return np.concatenate([values.reshape(-1), *gaps])

    labels = [f"{g}/{m}" for g in names for m in metrics]
    if len(names) > 1:
        labels += [f"difference/{m}" for m in metrics] + [f"ratio/{m}" for m in metrics]
    out = bootstrap_many(vector, labels, (y, pred, score, gidx), sampling)
    per_group = {g: {m: out[f"{g}/{m}"] for m in metrics} for g in names}
    difference = {m: out[f"difference/{m}"] for m in metrics if f"difference/{m}" in out}
    ratio = {m: out[f"ratio/{m}"] for m in metrics if f"ratio/{m}" in out}
    return per_group, difference, ratio


def audit_attribute(
    attribute: str,
    groups: np.ndarray,
    y: np.ndarray,
    score: np.ndarray,
    threshold: float = 0.5,
    min_group_size: int = 30,
    sampling: Sampling | None = None,
) -> AttributeAudit:
    sampling = sampling or Sampling()
    y, score, groups = (
        np.asarray(y, dtype=int),
        np.asarray(score, dtype=float),
        np.asarray(groups).astype(str),
    )
    check_arrays(y, score, groups)
    pred = (score >= threshold).astype(int)
    sizes = {str(g): int((groups == g).sum()) for g in sorted(np.unique(groups))}
    sufficient = [g for g, n in sizes.items() if n >= min_group_size]
    keep = np.isin(groups, sufficient)
    per_group: dict[str, dict[str, MetricCI]] = {}
    difference: dict[str, MetricCI] = {}
    ratio: dict[str, MetricCI] = {}
    eod: float | None = None
    if sufficient:
        arrays = (y[keep], pred[keep], score[keep], groups[keep])
        per_group, difference, ratio = group_intervals(*arrays, sampling.subset(keep))
    if len(sufficient) >= 2:
        eod = _finite(equalized_odds_difference(y[keep], pred[keep], sensitive_features=groups[keep]))
    results = []
    undefined: dict[str, list[str]] = {}
    for group, n in sizes.items():
        metrics = per_group.get(group, {})
        for name, value in metrics.items():
            if value.value is None:
                undefined.setdefault(name, []).append(group)
        mask = groups == group
        results.append(
            SubgroupResult(
                group=group,
                n=n,
                n_patients=len(np.unique(sampling.clusters[mask])) if sampling.clusters is not None else None,
                sufficient=group in sufficient,
                metrics=metrics,
                undefined=sorted(k for k, v in metrics.items() if v.value is None),
            )
        )
    return AttributeAudit(
        attribute=attribute,
        groups=results,
        difference=difference,
        ratio=ratio,
        equalized_odds_difference=eod,
        insufficient_groups=[r.group for r in results if not r.sufficient],
        undefined=undefined,
    )


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def bias_audit(
    columns: dict[str, np.ndarray],
    y: np.ndarray,
    score: np.ndarray,
    threshold: float = 0.5,
    min_group_size: int = 30,
    sampling: Sampling | None = None,
) -> list[AttributeAudit]:
    return [
        audit_attribute(name, values, y, score, threshold, min_group_size, sampling)
        for name, values in columns.items()
    ]
