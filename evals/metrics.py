"""Task metrics with bootstrap confidence intervals (classification, regression, generation): BCa by default,
percentile on request, resampling whole patients where each row's patient is known (a cluster bootstrap).
Inputs are checked first: unequal lengths, NaNs or a single class where AUC needs two are typed errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import norm
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score

from hai_tools.errors import HaiError
from hai_tools.stats import wilson


class EvalInputError(HaiError):
    """Predictions and labels cannot be scored as given (lengths, NaNs, classes)."""


CIMethod = Literal["bca", "percentile"]
JACKKNIFE_GROUPS = 200  # BCa's acceleration from at most this many delete-a-group jackknife estimates


class MetricCI(BaseModel):
    """A metric's point value and bootstrap CI, with how it was resampled and how many resamples counted."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int
    n_patients: int | None = Field(None, description="patients resampled (cluster bootstrap); None: rows")
    method: str | None = Field(None, description="bca, percentile, or why BCa fell back to percentile")
    n_resamples: int = 0
    n_used: int = Field(0, description="resamples that gave a defined value")
    n_undefined: int = Field(0, description="resamples where the metric was undefined (e.g. one class)")
    note: str | None = None


def wilson_ci(hits: int, n: int) -> MetricCI:
    """A proportion with its Wilson interval (honest at small n, where a bootstrap of 4 successes says [1, 1])."""
    if n == 0:
        return MetricCI(value=None, n=0, note="no rows")
    low, high = wilson(hits, n)
    return MetricCI(value=hits / n, low=low, high=high, n=n, method="wilson")


def value_with_interval(metric: MetricCI) -> str:
    """`0.123 [0.100, 0.150]` for a card's table; `undefined` when there is no value."""
    if metric.value is None:
        return "undefined"
    interval = (
        f" [{metric.low:.3f}, {metric.high:.3f}]"
        if metric.low is not None and metric.high is not None
        else ""
    )
    return f"{metric.value:.3f}{interval}"


@dataclass(frozen=True)
class Sampling:
    """How CIs are computed: resamples, seed, level, interval method, and the patient of each row (then
    whole patients are resampled: a cluster bootstrap, so repeated visits do not shrink the interval)."""

    n_resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05
    method: CIMethod = "bca"
    clusters: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> Sampling:
        """The same scheme on a subset of rows (a subgroup)."""
        clusters = None if self.clusters is None else np.asarray(self.clusters)[mask]
        return replace(self, clusters=clusters)

    def units(self, n: int) -> tuple[np.ndarray, int]:
        """Each row's resampling unit (its patient, or itself) as 0..k-1, and k."""
        if self.clusters is None:
            return np.arange(n), n
        _, unit = np.unique(np.asarray(self.clusters).astype(str), return_inverse=True)
        return unit, int(unit.max()) + 1

    def resamples(self, unit: np.ndarray, k: int) -> list[np.ndarray]:
        """Row indices of each resample: k units drawn with replacement, each bringing all its rows
        (`unit`, `k`: from `units`)."""
        rng = np.random.default_rng(self.seed)
        n = len(unit)
        if self.clusters is None:
            return [rng.integers(0, n, n) for _ in range(self.n_resamples)]
        rows = np.arange(n)
        return [np.repeat(rows, rng.multinomial(k, np.full(k, 1 / k))[unit]) for _ in range(self.n_resamples)]

    def jackknife(self, unit: np.ndarray, k: int) -> list[np.ndarray]:
        """Row indices with one unit (or one group of units) left out, for BCa's acceleration."""
        groups = min(k, JACKKNIFE_GROUPS)
        assign = np.random.default_rng(self.seed + 1).permutation(k) % groups
        row_group = assign[unit]
        return [np.flatnonzero(row_group != g) for g in range(groups)]


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


def _defined(value: float) -> bool:
    return value is not None and bool(np.isfinite(value))


def _bca_bounds(stats: np.ndarray, value: float, jack: np.ndarray, alpha: float) -> tuple[float, float] | str:
    """BCa quantile levels from the bias (share of resamples below the estimate) and the jackknife
    acceleration; a reason string where BCa is undefined (every resample on one side, no jackknife spread)."""
    below = float((stats < value).mean() + 0.5 * (stats == value).mean())
    if below <= 0 or below >= 1:
        return "bias correction undefined (every resample on one side)"
    z0 = float(norm.ppf(below))
    spread = jack.mean() - jack
    denominator = 6 * float((spread**2).sum()) ** 1.5
    accel = float((spread**3).sum()) / denominator if denominator > 0 else 0.0
    levels = []
    for z in (norm.ppf(alpha / 2), norm.ppf(1 - alpha / 2)):
        levels.append(float(norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))))
    return levels[0], levels[1]


def bootstrap(
    metric: Callable[..., float],
    arrays: tuple[np.ndarray, ...],
    sampling: Sampling | None = None,
    needs_both_classes: bool = False,
) -> MetricCI:
    """Point value and CI (BCa by default, percentile on request or where BCa is undefined), resampling rows
    or whole patients as `sampling` says. Resamples where the metric is undefined (one class for AUC, NaN)
    are counted in `n_undefined`, never silently dropped."""

    def vector(*sample: np.ndarray) -> np.ndarray:
        if needs_both_classes and len(np.unique(sample[0])) < 2:
            return np.asarray([np.nan])
        return np.asarray([float(metric(*sample))])

    result = bootstrap_many(vector, ["value"], arrays, sampling)["value"]
    if result.value is None and needs_both_classes:
        result.note = "undefined: only one class present"
    return result


def rate_ci(flags: Any, clusters: Any, n_resamples: int) -> MetricCI:
    """The share of true flags with a percentile interval over resampled clusters (template families, request
    sources: rows of one cluster are paraphrases of each other, so clusters, not rows, are resampled)."""
    flags = np.asarray(flags, dtype=float)
    if len(flags) == 0:
        return MetricCI(value=None, n=0, note="no rows")
    sampling = Sampling(n_resamples=n_resamples, method="percentile", clusters=np.asarray(clusters))
    return bootstrap(lambda f: float(np.mean(f)), (flags,), sampling)


def bootstrap_many(
    metric: Callable[..., np.ndarray],
    names: list[str],
    arrays: tuple[np.ndarray, ...],
    sampling: Sampling | None = None,
) -> dict[str, MetricCI]:
    """`bootstrap` for a metric that returns one value per name (e.g. every subgroup's sensitivity and the
    gap between them), all from the same resamples: one pass over the data per resample."""
    sampling = sampling or Sampling()
    n = len(arrays[0])
    unit, units = sampling.units(n)
    base = {
        "n": n,
        "n_patients": units if sampling.clusters is not None else None,
        "n_resamples": sampling.n_resamples,
    }

    def evaluate(idx: np.ndarray) -> np.ndarray:
        if not len(idx):  # a jackknife sample of a single patient leaves nothing to score
            return np.full(len(names), np.nan)
        return np.asarray(metric(*(a[idx] for a in arrays)), dtype=float)

    values = evaluate(np.arange(n))
    stats = (
        np.stack([evaluate(idx) for idx in sampling.resamples(unit, units)]) if sampling.n_resamples else None
    )
    jack = None
    if sampling.method == "bca" and stats is not None:
        jack = np.stack([evaluate(idx) for idx in sampling.jackknife(unit, units)])
    results: dict[str, MetricCI] = {}
    for k, name in enumerate(names):
        value = float(values[k])
        if not _defined(value):
            results[name] = MetricCI(value=None, note="undefined on these data", **base)
            continue
        column = stats[:, k] if stats is not None else np.asarray([])
        defined = column[np.isfinite(column)]
        counts = {"n_used": len(defined), "n_undefined": len(column) - len(defined)}
        if not len(defined):
            results[name] = MetricCI(value=value, note="no defined bootstrap resample", **base, **counts)
            continue
        levels = (sampling.alpha / 2, 1 - sampling.alpha / 2)
        method = "percentile"
        if jack is not None:
            spread = jack[:, k][np.isfinite(jack[:, k])]
            bca = (
                _bca_bounds(defined, value, spread, sampling.alpha)
                if len(spread) > 1
                else "too few jackknife values"
            )
            if isinstance(bca, tuple):
                method, levels = "bca", bca
            else:
                method = f"percentile (BCa: {bca})"
        low, high = np.quantile(defined, levels)
        results[name] = MetricCI(
            value=value, low=float(low), high=float(high), method=method, **base, **counts
        )
    return results


def auc(y: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def binary_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float = 0.5, sampling: Sampling | None = None
) -> dict[str, MetricCI]:
    """AUC, F1, sensitivity and specificity at `threshold`, calibration error; y in {0, 1}, score in [0, 1]."""
    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    check_arrays(y, score)
    pred = (score >= threshold).astype(int)

    def vector(a: np.ndarray, s: np.ndarray, p: np.ndarray) -> np.ndarray:
        f1 = float(f1_score(a, p, zero_division=0))
        return np.asarray(
            [auc(a, s), f1, _sensitivity(a, p), _specificity(a, p), expected_calibration_error(a, s)]
        )

    names = ["auc", "f1", "sensitivity", "specificity", "calibration_error"]
    metrics = bootstrap_many(vector, names, (y, score, pred), sampling)  # one pass over the resamples
    if metrics["auc"].value is None:
        metrics["auc"].note = "undefined: only one class present"
    return metrics


def multiclass_f1(labels: np.ndarray, predictions: np.ndarray, sampling: Sampling | None = None) -> MetricCI:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    check_arrays(labels, predictions)
    return bootstrap(
        lambda a, p: float(f1_score(a, p, average="macro", zero_division=0)), (labels, predictions), sampling
    )


def mae(targets: np.ndarray, predictions: np.ndarray, sampling: Sampling | None = None) -> MetricCI:
    targets, predictions = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
    check_arrays(targets, predictions)
    return bootstrap(lambda t, p: float(mean_absolute_error(t, p)), (targets, predictions), sampling)


def exact_match(references: list[str], predictions: list[str], sampling: Sampling | None = None) -> MetricCI:
    refs = np.asarray([r.strip().lower() for r in references])
    preds = np.asarray([p.strip().lower() for p in predictions])
    check_arrays(refs, preds)
    return bootstrap(lambda r, p: float((r == p).mean()), (refs, preds), sampling)
