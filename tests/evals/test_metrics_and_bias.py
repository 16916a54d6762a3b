"""Metrics with bootstrap CIs and the fairlearn bias audit, on data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from evals.bias import audit_attribute
from evals.metrics import EvalInputError, Sampling, binary_metrics, exact_match, mae, multiclass_f1


def test_perfect_and_random_scores_land_where_expected() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    perfect = binary_metrics(y, y.astype(float), sampling=Sampling(n_resamples=200))
    assert perfect["auc"].value == 1.0 and perfect["sensitivity"].value == 1.0
    noise = binary_metrics(y, rng.random(400), sampling=Sampling(n_resamples=200))
    assert noise["auc"].low is not None and noise["auc"].low < 0.5 < noise["auc"].high  # type: ignore[operator]
    assert mae(np.array([1.0, 2.0]), np.array([2.0, 4.0]), sampling=Sampling(n_resamples=50)).value == 1.5
    assert exact_match(["Refer "], ["refer"], sampling=Sampling(n_resamples=10)).value == 1.0
    assert (
        multiclass_f1(np.array(["a", "b"]), np.array(["a", "b"]), sampling=Sampling(n_resamples=10)).value
        == 1.0
    )


@pytest.mark.parametrize(
    ("y", "score", "error"),
    [
        (np.array([0, 1, 1]), np.array([0.1, 0.2]), "differ in length"),
        (np.array([0, 1]), np.array([0.1, np.nan]), "NaN"),
        (np.array([], dtype=int), np.array([]), "nothing to score"),
    ],
)
def test_bad_inputs_are_typed_errors(y: np.ndarray, score: np.ndarray, error: str) -> None:
    with pytest.raises(EvalInputError, match=error):
        binary_metrics(y, score, sampling=Sampling(n_resamples=10))


def test_single_class_auc_is_undefined_not_a_number() -> None:
    result = binary_metrics(np.ones(20, dtype=int), np.linspace(0, 1, 20), sampling=Sampling(n_resamples=20))
    assert result["auc"].value is None and "one class" in (result["auc"].note or "")


def test_audit_finds_a_planted_gap_and_reports_small_groups_apart() -> None:
    rng = np.random.default_rng(1)
    groups = np.array(["a"] * 300 + ["b"] * 300 + ["tiny"] * 5)
    y = rng.integers(0, 2, len(groups))
    score = np.where(groups == "a", y * 0.9 + 0.05, rng.random(len(groups)))  # group a perfect, b random
    audit = audit_attribute("site", groups, y, score, min_group_size=30, sampling=Sampling(n_resamples=100))
    assert audit.insufficient_groups == ["tiny"]
    gap = audit.difference["sensitivity"]
    assert gap.value is not None and gap.value > 0.3 and gap.low is not None and gap.low > 0.2
    assert audit.equalized_odds_difference is not None and audit.equalized_odds_difference > 0.3
    by_group = {g.group: g for g in audit.groups}
    assert by_group["a"].metrics["auc"].value == 1.0 and by_group["tiny"].metrics == {}


def test_a_single_patient_gets_a_value_and_no_bca_from_an_empty_jackknife() -> None:
    """BCa's jackknife leaves one patient out; with one patient that leaves nothing, which must not crash."""
    y, score = np.array([0, 1, 1]), np.array([0.2, 0.8, 0.7])
    result = binary_metrics(y, score, sampling=Sampling(n_resamples=20, clusters=np.array(["p"] * 3)))
    assert result["f1"].value == 1.0 and result["f1"].n_patients == 1
    assert result["f1"].method is not None and result["f1"].method.startswith("percentile (BCa:")
