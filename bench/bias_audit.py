"""Subgroup bootstrap CIs, like for like: hai-tools' `group_intervals` (the audit's own per-group and gap
intervals) against fairlearn's `MetricFrame(n_boot=...)`, on the same predictions, the same metrics
(sensitivity, specificity, selection rate per group), the same scheme (whole-frame row resampling, percentile
95% intervals) and the same number of resamples; interleaved repeats, ratio of medians printed.

    .venv/bin/python bench/bias_audit.py                  # 10k predictions, 1,000 resamples, 3 repeats
    .venv/bin/python bench/bias_audit.py --quick          # 2k predictions, 50 resamples, 2 repeats (tests)

The default is a hospital audit's size (10k predictions; fairlearn takes about 80 s a repeat on 2 cores). At 100k
predictions fairlearn's side did not finish three repeats in 20 minutes; `--n 100000` still runs it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from evals.bias import group_intervals
from evals.metrics import Sampling, _sensitivity, _specificity


def _selection_rate(y: np.ndarray, pred: np.ndarray) -> float:
    return float(pred.mean())


FAIRLEARN_METRICS = {
    "sensitivity": _sensitivity,
    "specificity": _specificity,
    "selection_rate": _selection_rate,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small size for tests")
    args = parser.parse_args()
    if args.quick:
        args.n, args.resamples, args.repeats = 2000, 50, 2
    rng = np.random.default_rng(0)
    groups = rng.choice(["site-a", "site-b", "site-c", "site-d"], args.n)
    y = rng.integers(0, 2, args.n)
    score = np.clip(y * 0.35 + rng.random(args.n) * 0.65, 0, 1)
    pred = (score >= 0.5).astype(int)
    sampling = Sampling(n_resamples=args.resamples, method="percentile")

    def ours() -> tuple[float, float]:
        per_group, _, _ = group_intervals(y, pred, score, groups, sampling, include_auc=False)
        a = per_group["site-a"]["sensitivity"]
        return float(a.low), float(a.high)  # type: ignore[arg-type]

    def theirs() -> tuple[float, float]:
        frame = MetricFrame(
            metrics=FAIRLEARN_METRICS,
            y_true=y,
            y_pred=pred,
            sensitive_features=pd.Series(groups, name="site"),
            n_boot=args.resamples,
            ci_quantiles=[0.025, 0.975],
            random_state=0,
        )
        ci = frame.by_group_ci
        return float(ci[0]["sensitivity"]["site-a"]), float(ci[1]["sensitivity"]["site-a"])

    times: dict[str, list[float]] = {"hai-tools": [], "fairlearn": []}
    intervals: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):  # interleaved: A B A B ...
        for name, fn in (("hai-tools", ours), ("fairlearn", theirs)):
            started = time.perf_counter()
            intervals[name] = fn()
            times[name].append(time.perf_counter() - started)
    print(
        f"{args.n} predictions, 4 subgroups, 3 metrics per group, {args.resamples} whole-frame row resamples, "
        f"percentile 95% CI, {args.repeats} interleaved repeats; python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}"
    )
    for name, values in times.items():
        low, high = intervals[name]
        print(
            f"{name:<10} seconds min/median/max {min(values):.4f}/{statistics.median(values):.4f}/{max(values):.4f}"
            f"  site-a sensitivity CI [{low:.4f}, {high:.4f}]"
        )
    ratio = statistics.median(times["fairlearn"]) / statistics.median(times["hai-tools"])
    print(f"ratio={ratio:.2f} (fairlearn median time / hai-tools median time; >1: hai-tools faster)")


if __name__ == "__main__":
    main()
