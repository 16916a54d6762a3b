"""`export distill` on the tiny merged teacher, then the student's TFLite build (greedy decode parity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.__main__ import main
from hai_tools.manifest import verify_artifact
from tests.conftest import measured_only


@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_student_distilled_with_provenance_and_agreement(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, kl: str
) -> None:
    out = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                str(merged_tiny),
                "--output_dir",
                str(out),
                "--kl",
                kl,
                "--max_steps",
                "3",
                "--hidden_size",
                "32",
                "--num_hidden_layers",
                "1",
                "--max_length",
                "128",
            ]
        )
        == 0
    )
    manifest = verify_artifact(out, kind="distilled_model")
    assert manifest.config["kl"] == kl
    assert [i.kind for i in manifest.inputs] == ["merged_model", "dataset"]
    assert 0.0 <= manifest.metrics["greedy_token_agreement"] <= 1.0
    assert manifest.metrics["student_parameters"] < manifest.metrics["teacher_parameters"]


def test_distilled_student_tflite_decodes_like_pytorch(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path
) -> None:
    student = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                str(merged_tiny),
                "--output_dir",
                str(student),
                "--max_steps",
                "2",
                "--hidden_size",
                "32",
                "--num_hidden_layers",
                "1",
                "--max_length",
                "128",
            ]
        )
        == 0
    )
    edge = tmp_path / "edge"
    assert (
        main(
            [
                "tflite",
                "--causal_lm",
                str(student),
                "--output_dir",
                str(edge),
                "--seq_len",
                "128",
                "--prefill_len",
                "32",
                *measured_only(demo_dataset),
            ]
        )
        == 0
    )
    fp32 = verify_artifact(edge).metrics["variants"]["fp32"]
    assert fp32["greedy_exact"] == 1.0
    assert main(["verify", str(edge)]) == 0
