"""bench/bias_audit.py in its quick mode: both sides run, agree on the interval, and the ratio is printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bias_bench_quick_mode_prints_a_ratio_and_matching_intervals() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bias_audit.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^ratio=\d+\.\d+ ", proc.stdout, re.MULTILINE)
    bounds = [tuple(map(float, m)) for m in re.findall(r"CI \[([\d.]+), ([\d.]+)\]", proc.stdout)]
    (ours_low, ours_high), (their_low, their_high) = bounds
    assert abs(ours_low - their_low) < 0.03 and abs(ours_high - their_high) < 0.03  # same scheme, same answer
