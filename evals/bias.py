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

from evals.metrics import MetricCI, Sampling, _sensitivity, _specificity, auc, bootstrap, check_arrays


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


def _selection_rate(y: np.ndarray, pred: np.ndarray) -> float:
    return float(pred.mean())


def _auc_of(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> float:
    return auc(y, score)


def _label_metric(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    return lambda y, pred, score: fn(y, pred)


# every metric takes (y, pred, score)
METRICS: dict[str, Callable[..., float]] = {
    "sensitivity": _label_metric(_sensitivity),
    "specificity": _label_metric(_specificity),
    "selection_rate": _label_metric(_selection_rate),
    "auc": _auc_of,
}


def _gap(fn: Callable[..., float], groups: list[str], kind: str) -> Callable[..., float]:
    """The between-group gap of `fn` on one (re)sample; NaN when any group's value is undefined there."""

    def gap(y: np.ndarray, pred: np.ndarray, score: np.ndarray, group: np.ndarray) -> float:
        values = []
        for g in groups:
            mask = group == g
            value = fn(y[mask], pred[mask], score[mask]) if mask.any() else float("nan")
            if not np.isfinite(value):
                return float("nan")
            values.append(value)
        high, low = max(values), min(values)
        if kind == "difference":
            return high - low
        return low / high if high > 0 else float("nan")

    return gap


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
    results, sufficient = [], []
    undefined: dict[str, list[str]] = {}
    for group in sorted(np.unique(groups)):
        mask = groups == group
        n = int(mask.sum())
        ok = n >= min_group_size
        metrics: dict[str, MetricCI] = {}
        if ok:
            sub = sampling.subset(mask)
            for name, fn in METRICS.items():
                metrics[name] = bootstrap(
                    fn, (y[mask], pred[mask], score[mask]), sub, needs_both_classes=name == "auc"
                )
                if metrics[name].value is None:
                    undefined.setdefault(name, []).append(group)
            sufficient.append(group)
        n_patients = len(np.unique(sampling.clusters[mask])) if sampling.clusters is not None else None
        results.append(
            SubgroupResult(
                group=group,
                n=n,
                n_patients=n_patients,
                sufficient=ok,
                metrics=metrics,
                undefined=sorted(k for k, v in metrics.items() if v.value is None),
            )
        )
    keep = np.isin(groups, sufficient)
    difference: dict[str, MetricCI] = {}
    ratio: dict[str, MetricCI] = {}
    eod: float | None = None
    if len(sufficient) >= 2:
        arrays = (y[keep], pred[keep], score[keep], groups[keep])
        sub = sampling.subset(keep)
        for name, fn in METRICS.items():
            difference[name] = bootstrap(_gap(fn, sufficient, "difference"), arrays, sub)
            ratio[name] = bootstrap(_gap(fn, sufficient, "ratio"), arrays, sub)
        eod = _finite(equalized_odds_difference(y[keep], pred[keep], sensitive_features=groups[keep]))
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
