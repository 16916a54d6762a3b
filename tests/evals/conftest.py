"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.__main__ import main


@pytest.fixture(scope="session")
def report_dir(merged_tiny: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evals") / "tiny"
    assert (
        main(
            [
                "run",
                str(merged_tiny),
                "--dataset",
                demo_dataset,
                "--output_dir",
                str(out),
                "--limit",
                "40",
                "--n_resamples",
                "100",
                "--min_group_size",
                "5",
                "--red_team_size",
                "quick",
            ]
        )
        == 0
    )
    return out
