"""`python -m evals parity`: the TFLite fallback's screening decisions beside the served model's, on the eval split;
the policy's floor in the gate, and a release that carries the report only with the exports it measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.__main__ import main as evals_main
from evals.backend_parity import load_parity
from evals.gate import MetricBound, parity_checks
from governance.__main__ import main as governance_main
from hai_tools.manifest import Manifest, load_manifest, write_manifest
from tests.conftest import measured_only


@pytest.fixture(scope="module")
def long_tflite(merged_tiny: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny merged model as a TFLite reasoner whose cache holds every screening prompt (the shared 128-token
    export does not hold them all, which `test_a_fallback_that_cannot_hold_the_prompt_is_counted` uses)."""
    from export.__main__ import main

    out = tmp_path_factory.mktemp("edge") / "tiny-lm-512"
    args = ["tflite", "--causal_lm", str(merged_tiny), "--output_dir", str(out)]
    assert main([*args, "--seq_len", "512", "--prefill_len", "64", *measured_only(demo_dataset)]) == 0
    return out


@pytest.fixture(scope="module")
def parity(
    merged_tiny: Path, long_tflite: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("parity") / "report"
    args = ["parity", str(merged_tiny), "--tflite", str(long_tflite), "--dataset", demo_dataset]
    assert evals_main([*args, "--limit", "8", "--variant", "fp32", "--output_dir", str(out)]) == 0
    return out


def test_the_fp32_fallback_decides_as_the_served_model(parity: Path, long_tflite: Path) -> None:
    """fp32 TFLite passed its conversion's greedy-token parity, so it must choose the same labels as the local
    backend on every case, with probabilities within float32 noise."""
    report, _ = load_parity(parity)
    ((name, figures),) = report.backends.items()
    assert name == f"tflite:{long_tflite.name}" and figures.variant == "fp32" and figures.unanswered == 0
    assert report.n == 8 and figures.agreement.value == 1.0 and figures.agreement.n == 8
    assert (
        figures.agreement.low is not None and figures.agreement.low < 1.0
    )  # Wilson: 8 of 8 is not certainty
    assert figures.max_probability_diff < 1e-3, figures.max_probability_diff
    assert report.reference.agreement.value == 1.0
    assert figures.artifact == load_manifest(long_tflite).content_hash
    text = (parity / "backend_parity.json").read_text()
    assert "case_id" not in text and "pseudo" not in text  # counts and a hash of the order, no case ids


def test_a_fallback_that_cannot_hold_the_prompt_is_counted(
    merged_tiny: Path, tiny_lm_tflite: Path, demo_dataset: str, tmp_path: Path
) -> None:
    """The 128-token export refuses a screening prompt longer than its cache (the second of these three): that case
    counts as not served and as a disagreement; the two it holds agree."""
    args = ["parity", str(merged_tiny), "--tflite", str(tiny_lm_tflite), "--dataset", demo_dataset]
    assert evals_main([*args, "--limit", "3", "--variant", "fp32", "--output_dir", str(tmp_path / "p")]) == 0
    report, _ = load_parity(tmp_path / "p")
    ((_, figures),) = report.backends.items()
    assert figures.unanswered == 1 and figures.agreement.value == 2 / 3, figures
    assert figures.max_probability_diff < 1e-3


def test_the_floor_refuses_a_fallback_that_disagrees(parity: Path) -> None:
    report, _ = load_parity(parity)
    floor = MetricBound(min=0.9, min_n=8)
    assert all(c.passed for c in parity_checks(report, floor))
    ((name, figures),) = report.backends.items()
    worse = figures.model_copy(update={"agreement": figures.agreement.model_copy(update={"value": 0.5})})
    failed = [
        c for c in parity_checks(report.model_copy(update={"backends": {name: worse}}), floor) if not c.passed
    ]
    assert [c.name for c in failed] == [f"backend parity {name} agreement >= 0.9"]
    missing = parity_checks(None, floor)
    assert not missing[0].passed and missing[0].detail.startswith("none given")
    assert not parity_checks(report.model_copy(update={"backends": {}}), floor)[0].passed


def test_parity_refuses_what_is_not_a_tflite_reasoner(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["parity", str(merged_tiny), "--tflite", str(merged_tiny), "--dataset", demo_dataset]
    assert evals_main([*args, "--output_dir", str(tmp_path / "p")]) == 2
    assert "is a merged_model, not a TFLite reasoner (tflite_causal_lm)" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_release_carries_the_report_with_the_exports_it_measured(
    merged_tiny: Path,
    long_tflite: Path,
    parity: Path,
    signed: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text((signed["base"] / "policy.yaml").read_text() + "backend_parity: {min: 0.9}\n")
    release = ["release", str(merged_tiny), "--report", str(signed["report"]), "--policy", str(policy)]
    release += ["--key", str(signed["base"] / "keys" / "release.key")]
    capsys.readouterr()
    assert governance_main([*release, "--output_dir", str(tmp_path / "none")]) == 2
    assert "backend parity (none given" in capsys.readouterr().err
    with_parity = [*release, "--backend_parity", str(parity)]
    assert governance_main([*with_parity, "--output_dir", str(tmp_path / "x")]) == 2
    assert "an export this release does not carry (--export)" in capsys.readouterr().err

    other = tmp_path / "other"
    shutil.copytree(parity, other)
    data = json.loads((other / "backend_parity.json").read_text())
    data["merged_hash"] = "sha256:" + "0" * 64
    (other / "backend_parity.json").write_text(json.dumps(data))
    write_manifest(other, Manifest.model_validate(load_manifest(other).model_dump(exclude={"files"})))
    args = [*release, "--backend_parity", str(other), "--export", str(long_tflite)]
    assert governance_main([*args, "--output_dir", str(tmp_path / "x")]) == 2
    assert "is of tiny-lora, not of the merged model in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    ok = tmp_path / "ok"
    assert governance_main([*with_parity, "--export", str(long_tflite), "--output_dir", str(ok)]) == 0
    card = (ok / "README.md").read_text()
    assert "## Backend parity (fallbacks against the served model)" in card and "| local |" in card
    assert "(fp32) | 1.000 [" in card
    assert json.loads((ok / "backend_parity.json").read_text())["n"] == 8
    assert governance_main(["verify", str(ok), "--public_key", str(signed["pub"])]) == 0
