"""Bias audit with fairlearn: per-subgroup metrics with bootstrap CIs, between-group differences and ratios,
and the equalized-odds difference. Subgroups smaller than `min_group_size` are reported as such and left out
of the gaps, never silently averaged in.

    python -m evals run ...   (the audit is part of every report)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, equalized_odds_difference
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from evals.metrics import MetricCI, _sensitivity, _specificity, bootstrap, check_arrays


class SubgroupResult(BaseModel):
    group: str
    n: int
    sufficient: bool
    metrics: dict[str, MetricCI]


class AttributeAudit(BaseModel):
    attribute: str
    groups: list[SubgroupResult]
    difference: dict[str, float | None]
    ratio: dict[str, float | None]
    equalized_odds_difference: float | None
    insufficient_groups: list[str]


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _selection_rate(y: np.ndarray, pred: np.ndarray) -> float:
    return float(pred.mean())


METRICS = {"sensitivity": _sensitivity, "specificity": _specificity, "selection_rate": _selection_rate}


def audit_attribute(
    attribute: str,
    groups: np.ndarray,
    y: np.ndarray,
    score: np.ndarray,
    threshold: float = 0.5,
    min_group_size: int = 30,
    n_resamples: int = 1000,
    seed: int = 0,
) -> AttributeAudit:
    y, score, groups = (
        np.asarray(y, dtype=int),
        np.asarray(score, dtype=float),
        np.asarray(groups).astype(str),
    )
    check_arrays(y, score, groups)
    pred = (score >= threshold).astype(int)
    results, sufficient = [], []
    for group in sorted(np.unique(groups)):
        mask = groups == group
        n = int(mask.sum())
        ok = n >= min_group_size
        metrics: dict[str, MetricCI] = {}
        if ok:
            for name, fn in METRICS.items():
                metrics[name] = bootstrap(fn, (y[mask], pred[mask]), n_resamples, seed)
            metrics["auc"] = bootstrap(
                _auc, (y[mask], score[mask]), n_resamples, seed, needs_both_classes=True
            )
            sufficient.append(group)
        results.append(SubgroupResult(group=group, n=n, sufficient=ok, metrics=metrics))
    keep = np.isin(groups, sufficient)
    difference: dict[str, float | None] = {}
    ratio: dict[str, float | None] = {}
    eod: float | None = None
    if len(sufficient) >= 2:
        frame = MetricFrame(
            metrics={k: v for k, v in METRICS.items()},
            y_true=y[keep],
            y_pred=pred[keep],
            sensitive_features=pd.Series(groups[keep], name=attribute),
        )
        difference = {k: _finite(v) for k, v in frame.difference().items()}
        ratio = {k: _finite(v) for k, v in frame.ratio().items()}
        eod = _finite(equalized_odds_difference(y[keep], pred[keep], sensitive_features=groups[keep]))
    return AttributeAudit(
        attribute=attribute,
        groups=results,
        difference=difference,
        ratio=ratio,
        equalized_odds_difference=eod,
        insufficient_groups=[r.group for r in results if not r.sufficient],
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
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[AttributeAudit]:
    return [
        audit_attribute(name, values, y, score, threshold, min_group_size, n_resamples, seed)
        for name, values in columns.items()
    ]
