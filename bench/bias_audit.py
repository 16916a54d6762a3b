"""Bias-audit time on 100k predictions with 1,000 bootstrap resamples: hai-tools' audit (per-subgroup CIs for
sensitivity, specificity and selection rate) against fairlearn's own MetricFrame bootstrap (`n_boot`) on the
same data and metrics, measured side by side in one run.

    .venv/bin/python bench/bias_audit.py [--n 100000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from evals.bias import METRICS, audit_attribute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    groups = rng.choice(["site-a", "site-b", "site-c", "site-d"], args.n)
    y = rng.integers(0, 2, args.n)
    score = np.clip(y * 0.35 + rng.random(args.n) * 0.65, 0, 1)
    pred = (score >= 0.5).astype(int)

    started = time.perf_counter()
    ours = audit_attribute("site", groups, y, score, n_resamples=args.resamples, min_group_size=30)
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    frame = MetricFrame(
        metrics=dict(METRICS),
        y_true=y,
        y_pred=pred,
        sensitive_features=pd.Series(groups, name="site"),
        n_boot=args.resamples,
        ci_quantiles=[0.025, 0.975],
        random_state=0,
    )
    theirs_ci = frame.by_group_ci
    theirs_s = time.perf_counter() - started

    a = next(g for g in ours.groups if g.group == "site-a").metrics["sensitivity"]
    lo, hi = theirs_ci[0]["sensitivity"]["site-a"], theirs_ci[1]["sensitivity"]["site-a"]
    print(f"{args.n} predictions, 4 subgroups, {args.resamples} bootstrap resamples")
    print(f"{'audit':<34} {'seconds':>8}  site-a sensitivity 95% CI")
    print(f"{'hai-tools (per-group + AUC)':<34} {ours_s:>8.2f}  [{a.low:.4f}, {a.high:.4f}]")
    print(f"{'fairlearn MetricFrame(n_boot)':<34} {theirs_s:>8.2f}  [{lo:.4f}, {hi:.4f}]")
    print(
        f"ratio hai-tools / fairlearn: {ours_s / theirs_s:.2f}x the time (hai-tools also computes subgroup AUC CIs)"
    )


if __name__ == "__main__":
    main()
