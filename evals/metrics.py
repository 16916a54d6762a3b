"""Task metrics with percentile-bootstrap confidence intervals (classification, regression, generation).
Inputs are checked first: unequal lengths, NaNs or a single class where AUC needs two are typed errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score

from hai_tools.errors import HaiError


class EvalInputError(HaiError):
    """Predictions and labels cannot be scored as given (lengths, NaNs, classes)."""


class MetricCI(BaseModel):
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int
    note: str | None = None


def check_arrays(*arrays: np.ndarray) -> None:
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise EvalInputError(f"predictions and labels differ in length: {sorted(lengths)}")
    if not lengths.pop():
        raise EvalInputError("nothing to score: no predictions")
    for array in arrays:
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise EvalInputError(f"{int(np.isnan(array).sum())} NaN value(s) in the inputs")


def _sensitivity(y: np.ndarray, pred: np.ndarray) -> float:
    positives = y == 1
    return float((pred[positives] == 1).mean()) if positives.any() else float("nan")


def _specificity(y: np.ndarray, pred: np.ndarray) -> float:
    negatives = y == 0
    return float((pred[negatives] == 0).mean()) if negatives.any() else float("nan")


def expected_calibration_error(y: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(float(y[mask].mean()) - float(score[mask].mean()))
    return float(error)


def bootstrap(
    metric: Callable[..., float],
    arrays: tuple[np.ndarray, ...],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    needs_both_classes: bool = False,
) -> MetricCI:
    """Point value and percentile CI; resamples lacking a class are skipped for class-dependent metrics."""
    n = len(arrays[0])
    if needs_both_classes and len(np.unique(arrays[0])) < 2:
        return MetricCI(value=None, n=n, note="undefined: only one class present")
    value = float(metric(*arrays))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        sample = tuple(a[idx] for a in arrays)
        if needs_both_classes and len(np.unique(sample[0])) < 2:
            continue
        stat = metric(*sample)
        if not np.isnan(stat):
            stats.append(stat)
    if not stats:
        return MetricCI(value=value, n=n, note="no valid bootstrap resample")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return MetricCI(value=value, low=float(low), high=float(high), n=n)


def binary_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float = 0.5, n_resamples: int = 1000, seed: int = 0
) -> dict[str, MetricCI]:
    """AUC, F1, sensitivity and specificity at `threshold`, calibration error; y in {0, 1}, score in [0, 1]."""
    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    check_arrays(y, score)
    pred = (score >= threshold).astype(int)
    return {
        "auc": bootstrap(
            lambda a, s: float(roc_auc_score(a, s)), (y, score), n_resamples, seed, needs_both_classes=True
        ),
        "f1": bootstrap(lambda a, p: float(f1_score(a, p, zero_division=0)), (y, pred), n_resamples, seed),
        "sensitivity": bootstrap(_sensitivity, (y, pred), n_resamples, seed),
        "specificity": bootstrap(_specificity, (y, pred), n_resamples, seed),
        "calibration_error": bootstrap(expected_calibration_error, (y, score), n_resamples, seed),
    }


def multiclass_f1(
    labels: np.ndarray, predictions: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> MetricCI:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    check_arrays(labels, predictions)
    return bootstrap(
        lambda a, p: float(f1_score(a, p, average="macro", zero_division=0)),
        (labels, predictions),
        n_resamples,
        seed,
    )


def mae(targets: np.ndarray, predictions: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> MetricCI:
    targets, predictions = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
    check_arrays(targets, predictions)
    return bootstrap(lambda t, p: float(mean_absolute_error(t, p)), (targets, predictions), n_resamples, seed)


def exact_match(
    references: list[str], predictions: list[str], n_resamples: int = 1000, seed: int = 0
) -> MetricCI:
    refs = np.asarray([r.strip().lower() for r in references])
    preds = np.asarray([p.strip().lower() for p in predictions])
    check_arrays(refs, preds)
    return bootstrap(lambda r, p: float((r == p).mean()), (refs, preds), n_resamples, seed)
