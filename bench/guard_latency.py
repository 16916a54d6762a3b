"""What the safety guard adds to a reasoner call on CPU: the request side (question alone, then with 2, 4 and 8
context passages) and the answer side, layered guard (rules + classifier) against the rules alone, interleaved
repeats, p50 and p99 per call. Goal: p50 <= 5 ms per side for a request with no context.

    .venv/bin/python bench/guard_latency.py --guard out/guard [--repeats 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hai_tools.guard import Guard
from hai_tools.safety import default_policy

QUESTION = "18-month-old who says no words and does not point; mother worried. Refer for evaluation?"
PASSAGE = (
    "CDC milestone checklist: by 18 months most children say three or more words and point to show things."
)
ANSWER = (
    "Proposal for the clinician: no words at 18 months meets the referral criteria; consider an evaluation."
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", type=Path, required=True, help="guard artifact (python -m trainer guard)")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    guards = {"layered": Guard(default_policy(), args.guard), "rules": Guard(default_policy())}
    cases = {
        "request": lambda g: g.request(QUESTION),
        "request+2": lambda g: g.request(QUESTION, [PASSAGE] * 2),
        "request+4": lambda g: g.request(QUESTION, [PASSAGE] * 4),
        "request+8": lambda g: g.request(QUESTION, [PASSAGE] * 8),
        "answer": lambda g: g.answer(ANSWER),
    }
    timings: dict[tuple[str, str], list[float]] = {(c, g): [] for c in cases for g in guards}
    for guard in guards.values():  # warm-up
        for call in cases.values():
            call(guard)
    for _ in range(args.repeats):
        for case, call in cases.items():
            for name, guard in guards.items():
                started = time.perf_counter()
                call(guard)
                timings[(case, name)].append((time.perf_counter() - started) * 1000)
    for case in cases:
        layered, rules = timings[(case, "layered")], timings[(case, "rules")]
        print(
            f"{case:10s} layered p50={statistics.median(layered):.2f}ms p99={percentile(layered, 0.99):.2f}ms  "
            f"rules p50={statistics.median(rules):.3f}ms  ratio={statistics.median(layered) / statistics.median(rules):.1f}"
        )


if __name__ == "__main__":
    main()
