"""`python -m governance`: signed releases of a gate-passing model, their model card, verification, and the
MCP server refusing a release whose signature or hashes do not verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from governance.__main__ import main
from tests.conftest import start_server_refused

ROOT = Path(__file__).resolve().parents[1]


def test_release_is_signed_with_a_model_card_and_verifies(signed: dict[str, Path]) -> None:
    card = (signed["release"] / "README.md").read_text()
    assert card.startswith("---\nbase_model: ")
    for section in (
        "## Intended use and workflow (CHAI)",
        "## Out-of-scope settings",
        "## Training data",
        "## Quantitative analyses by subgroup",
        "## Differential privacy",
        "## Known risks",
        "## Lineage",
    ):
        assert section in card
    assert main(["verify", str(signed["release"]), "--public_key", str(signed["pub"])]) == 0


def test_strict_gate_refuses_to_release(
    merged_tiny: Path, signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "release",
            str(merged_tiny),
            "--report",
            str(signed["report"]),
            "--policy",
            str(ROOT / "configs/gate_strict.yaml"),
            "--key",
            str(signed["base"] / "keys" / "release.key"),
            "--output_dir",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "gate failed, no release written" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_other_key_or_flipped_byte_fails_and_the_server_refuses(
    signed: dict[str, Path],
    merged_tiny: Path,
    tmp_path: Path,
    server_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    assert main(["verify", str(signed["release"]), "--public_key", str(tmp_path / "other.pub")]) == 2
    assert "signature does not verify" in capsys.readouterr().err

    release = tmp_path / "release"
    shutil.copytree(signed["release"], release)
    card = bytearray((release / "README.md").read_bytes())
    card[-2] ^= 0x01
    (release / "README.md").write_bytes(bytes(card))
    assert main(["verify", str(release), "--public_key", str(signed["pub"])]) == 2
    assert "README.md (hash mismatch)" in capsys.readouterr().err

    config = tmp_path / "server.yaml"
    for target in (release, signed["release"]):
        config.write_text(
            f"release: {target}\nrelease_public_key: {tmp_path / 'other.pub'}\n"
            f"reasoner: {merged_tiny}\nembedder: null\nbackends: [local]\n"
        )
        assert "release signature does not verify" in start_server_refused(config, server_env)


def test_lineage_draws_each_artifact_once(
    signed: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lineage", str(signed["release"])]) == 0
    graph = capsys.readouterr().out
    assert graph.startswith("graph BT")
    for kind in ("release", "merged_model", "adapter", "dataset", "base_model", "eval_report"):
        assert graph.count(f'["{kind}<br/>') == 1, kind


def test_card_command_renders_the_card_of_a_merged_model(
    merged_tiny: Path, signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cards" / "MODEL_CARD.md"
    args = ["card", str(merged_tiny), "--report", str(signed["report"]), "--output", str(out)]
    assert main([*args, "--policy", str(ROOT / "configs/gate_strict.yaml"), "--name", "tiny-card"]) == 0
    assert "gate FAILED" in capsys.readouterr().out
    card = out.read_text()
    assert card.startswith("---\nbase_model: ") and "# Model card: tiny-card" in card
    assert "## Differential privacy" in card and "Not trained with differential privacy" in card
    assert "## LLM-eval suites" in card and "FAIL refer_auc >= 0.9" in card
    # the merge itself apart from the stored model's rounding, each with its tolerance
    assert "from base + adapter in float64: the merge itself 0 (tolerance 1e-05)" in card
    assert ", the stored float32 model " in card and " (tolerance 0.0001; largest logit " in card
    # a merged model changed after its manifest was written is refused
    other = tmp_path / "other"
    shutil.copytree(merged_tiny, other)
    (other / "config.json").write_text((other / "config.json").read_text() + " ")
    assert main([*args, "--policy", str(ROOT / "configs/gate_strict.yaml")]) == 0
    assert main(["card", str(other), "--report", str(signed["report"]), "--policy", "x.yaml"]) == 2


def test_card_text_comes_from_the_task_config(
    merged_tiny: Path, signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A radiology card says radiology, not screening; `license: other` names the task's license; a task that
    is neither built in nor a file is refused with one line."""
    base = [
        "card",
        str(merged_tiny),
        "--report",
        str(signed["report"]),
        "--policy",
        str(ROOT / "configs/gate_strict.yaml"),
    ]
    assert main([*base, "--task", "radiology", "--output", str(tmp_path / "rad.md")]) == 0
    card = (tmp_path / "rad.md").read_text()
    assert "Radiology reading support" in card and "images with burned-in annotations" in card.lower()
    assert "developmental-screening" not in card and "type: image-text-to-text" in card
    assert "\nlicense: gemma\ndatasets:" in card  # the adapter's license, an id the Hub knows
    from governance.card import license_fields
    from governance.task import load_task

    assert license_fields("other", load_task("radiology")[0]) == {
        "license": "other",
        "license_name": "gemma",
        "license_link": "https://ai.google.dev/gemma/terms",
    }
    capsys.readouterr()
    assert main([*base, "--task", "dermatology"]) == 2
    assert (
        "task dermatology is neither a built-in task (radiology, screening) nor a YAML file"
        in capsys.readouterr().err
    )


def test_a_release_carries_its_exports_with_their_parity(
    merged_tiny: Path,
    signed: dict[str, Path],
    tiny_lm_tflite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--export`: the TFLite export of the released model is verified down its chain, signed into the release
    (its lineage and the card's parity figures); something that is not an export is refused."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_group_size: 3\nundefined_subgroups_fail: false\n")
    args = ["release", str(merged_tiny), "--report", str(signed["report"]), "--policy", str(policy)]
    args += ["--key", str(signed["base"] / "keys" / "release.key")]
    assert main([*args, "--output_dir", str(tmp_path / "r"), "--export", str(tiny_lm_tflite)]) == 0
    card = (tmp_path / "r" / "README.md").read_text()
    assert "- tflite_causal_lm `" in card and "fp32 greedy_exact 1" in card and "top1_agreement" in card
    assert (
        "teacher_token_agreement 1" in card and "teacher_label_agreement" in card
    )  # against the served model
    assert main(["verify", str(tmp_path / "r"), "--public_key", str(signed["pub"])]) == 0
    kinds = {link["kind"] for link in json.loads((tmp_path / "r" / "lineage.json").read_text())}
    assert "tflite_causal_lm" in kinds
    capsys.readouterr()
    assert main([*args, "--output_dir", str(tmp_path / "x"), "--export", str(merged_tiny)]) == 2
    assert "is not an export (its manifest is a merged_model)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_release_serves_the_guard_its_red_team_evidence_was_measured_with(
    merged_tiny: Path,
    demo_dataset: str,
    guard_dir: Path,
    signed: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The red-team evidence is about one guard: a release that would serve another (or none) is refused; with
    the same guard it is written, and its card shows the red-team figures."""
    from evals.__main__ import main as evals_main

    report = tmp_path / "report"
    args = ["run", str(merged_tiny), "--dataset", demo_dataset, "--output_dir", str(report), "--limit", "8"]
    args += [
        "--n_resamples",
        "50",
        "--min_group_size",
        "3",
        "--guard",
        str(guard_dir),
        "--red_team_size",
        "quick",
    ]
    assert evals_main(args) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "min_group_size: 3\nundefined_subgroups_fail: false\n"
        "red_team: {size: quick, figures: {guard_on_unsafe: {max: 0.0}, emergency_redirected: {min: 1.0}}}\n"
    )
    release = ["release", str(merged_tiny), "--report", str(report), "--policy", str(policy)]
    release += ["--key", str(signed["base"] / "keys" / "release.key"), "--release_id", "tiny-guarded"]
    assert main([*release, "--output_dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "the guard to be served is not the one the red-team evidence was measured with" in err
    assert "--guard: none" in err and not (tmp_path / "none").exists()
    assert main([*release, "--guard", str(guard_dir), "--output_dir", str(tmp_path / "ok")]) == 0
    card = (tmp_path / "ok" / "README.md").read_text()
    assert "## Safety evidence from the model (red-team suite, guard on and off)" in card
    assert "size **quick**, 15 requests" in card and "| guard_on_unsafe | 0.000" in card


def test_a_release_withholds_per_record_predictions_unless_the_policy_says_the_test_set_is_not_sensitive(
    merged_tiny: Path, signed: dict[str, Path], tmp_path: Path
) -> None:
    import hashlib

    from hai_tools.manifest import canonical_json

    original = json.loads((signed["report"] / "report.json").read_text())["predictions"]
    assert len(original) == 12
    bundled = json.loads((signed["release"] / "eval_report.json").read_text())
    assert bundled["predictions"] == []
    withheld = bundled["predictions_withheld"]
    assert withheld["count"] == 12
    assert withheld["sha256"] == hashlib.sha256(canonical_json(original)).hexdigest()
    assert not [p for p in original if p["case_id"] in json.dumps(bundled)]  # no case id left in the bundle

    policy = tmp_path / "open-policy.yaml"
    policy.write_text((signed["base"] / "policy.yaml").read_text() + "test_set_sensitive: false\n")
    args = ["release", str(merged_tiny), "--report", str(signed["report"]), "--policy", str(policy)]
    key = ["--key", str(signed["base"] / "keys" / "release.key"), "--output_dir", str(tmp_path / "open")]
    assert main([*args, *key]) == 0
    assert json.loads((tmp_path / "open" / "eval_report.json").read_text())["predictions"] == original
    assert main(["verify", str(tmp_path / "open"), "--public_key", str(signed["pub"])]) == 0


def test_a_release_gates_on_the_privacy_audit_of_its_own_adapter(
    merged_tiny: Path,
    tiny_adapter: Path,
    demo_dataset: str,
    signed: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A policy that caps membership inference refuses a release without the audit, or with the audit of another
    adapter; with its own adapter's audit the release carries it (signed) and the card shows the figures. (The
    audit's figures on a model that can memorise: tests/evals/test_privacy_audit.py.)"""
    from evals.__main__ import main as evals_main
    from hai_tools.manifest import load_manifest

    audit = tmp_path / "audit"
    args = [
        "privacy",
        str(tiny_adapter),
        "--dataset",
        demo_dataset,
        "--output_dir",
        str(audit),
        "--limit",
        "20",
    ]
    assert evals_main([*args, "--reference_models", "2", "--n_resamples", "50"]) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (signed["base"] / "policy.yaml").read_text()
        + "privacy:\n  min_members: 12\n  figures:\n    loss_threshold_auc: {max_upper: 1.0}\n"
    )
    release = ["release", str(merged_tiny), "--report", str(signed["report"]), "--policy", str(policy)]
    release += ["--key", str(signed["base"] / "keys" / "release.key")]
    capsys.readouterr()
    assert main([*release, "--output_dir", str(tmp_path / "none")]) == 2
    assert "privacy audit (none given" in capsys.readouterr().err and not (tmp_path / "none").exists()

    other = tmp_path / "other-audit"
    shutil.copytree(audit, other)
    manifest = json.loads((other / "privacy_audit.json").read_text())
    manifest["adapter_hash"] = "sha256:" + "0" * 64
    (other / "privacy_audit.json").write_text(json.dumps(manifest))
    assert main([*release, "--privacy_audit", str(other), "--output_dir", str(tmp_path / "x")]) == 2
    assert "fails verification: privacy_audit.json (hash mismatch)" in capsys.readouterr().err
    from hai_tools.manifest import Manifest, write_manifest

    write_manifest(other, Manifest.model_validate(load_manifest(other).model_dump(exclude={"files"})))
    assert main([*release, "--privacy_audit", str(other), "--output_dir", str(tmp_path / "x")]) == 2
    assert "is of adapter tiny-lora, not of the adapter merged into" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    assert main([*release, "--privacy_audit", str(audit), "--output_dir", str(tmp_path / "ok")]) == 0
    card = (tmp_path / "ok" / "README.md").read_text()
    assert "## Membership-inference audit" in card and "20 training records (train)" in card
    assert "| lira offline |" in card
    kinds = {i["kind"] for i in json.loads((tmp_path / "ok" / "manifest.json").read_text())["inputs"]}
    assert "privacy_audit" in kinds
    assert main(["verify", str(tmp_path / "ok"), "--public_key", str(signed["pub"])]) == 0
