"""The on-device reasoner against the served model it stands in for (`export tflite --causal_lm`, floors from
`export/edge_agreement.py`): each variant's label and token agreement with its teacher on the eval split is
recorded in the edge manifest, and a variant below a floor is not written; with none left, nothing is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.__main__ import main
from hai_tools.manifest import verify_artifact
from tests.conftest import SPECIALS, bpe_tokenizer, tiny_text_config


def _tiny_causal_lm(folder: Path, tokenizer_source: Path | None, seed: int) -> Path:
    """A tiny Gemma-3 of the test shape with its own random weights: the tokenizer of `tokenizer_source`, or a
    new 300-word one (another vocabulary) when None."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    from hai_tools.models import gemma_chat_template

    if tokenizer_source is None:
        tokenizer = bpe_tokenizer(
            ["fever and rash for three days", "walks without holding on"], SPECIALS, 300
        )
        tokenizer.chat_template = gemma_chat_template()
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(seed)
    Gemma3ForCausalLM(tiny_text_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_merged_model_converted_agrees_with_itself_and_it_is_recorded(
    tiny_lm_tflite: Path, merged_tiny: Path, demo_dataset: str
) -> None:
    """fp32 of the merged model is the served model up to float32 noise: on every case its cache holds it makes
    the teacher's label and predicts every token of the teacher's greedy answer; the cases it cannot hold (prompt
    over its 128-token cache) count against the label agreement, and the manifest says so."""
    manifest = verify_artifact(tiny_lm_tflite, kind="tflite_causal_lm")
    fp32 = manifest.metrics["variants"]["fp32"]
    served = fp32["teacher_cases"] - fp32["teacher_unserved"]
    assert fp32["teacher_cases"] == 8 and fp32["teacher_tokens"] > 0
    assert fp32["teacher_token_agreement"] == 1.0
    assert fp32["teacher_label_agreement"] == served / 8
    # the size is the written file's against the teacher's weights as served (its safetensors), measured here
    teacher_bytes = sum(f.stat().st_size for f in merged_tiny.glob("*.safetensors"))
    written = (tiny_lm_tflite / "fp32.tflite").stat().st_size
    assert fp32["size_ratio_to_teacher"] == pytest.approx(written / teacher_bytes)
    config = manifest.config["teacher_agreement"]
    assert config["dataset"] == demo_dataset and config["split"] == "test" and config["limit"] == 8
    assert config["floors"] == {"min_label_agreement": 0.0, "min_token_agreement": 0.0, "max_size_ratio": 2.0}
    assert manifest.input("dataset").name == demo_dataset


def test_a_reasoner_that_does_not_agree_with_its_teacher_is_refused(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another random model with the teacher's tokenizer (it converts cleanly: its own fp32 parity holds) is no
    fallback for the teacher. fp32 is refused unmeasured by the size cap, int8 by its token agreement (the label
    floor may or may not trip on 8 cases of 3 labels); nothing is written."""
    foreign = _tiny_causal_lm(tmp_path / "foreign", merged_tiny, seed=1)
    out = tmp_path / "edge"
    args = ["tflite", "--causal_lm", str(foreign), "--output_dir", str(out), "--seq_len", "512"]
    args += ["--teacher", str(merged_tiny), "--dataset", demo_dataset, "--agreement_limit", "8"]
    assert main([*args, "--max_size_ratio", "1.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "TFLite reasoner: no variant stands in for its teacher (" in err and "nothing written" in err
    assert "fp32: size " in err and "of the teacher's weights > 120%" in err
    assert "int8: " in err and "top-1 token agreement 0." in err and "< 0.8" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]


def test_a_reasoner_is_checked_before_anything_is_converted(
    merged_tiny: Path,
    tiny_model_dir: Path,
    demo_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each refusal comes before the converter runs (a converter that would fail is installed to prove it)."""
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("HAI_TFLITE_PYTHON", str(broken))
    other_vocabulary = _tiny_causal_lm(tmp_path / "other-vocab", None, seed=0)
    out = tmp_path / "edge"
    base = ["tflite", "--output_dir", str(out)]
    cases = {
        "give --dataset": ["--causal_lm", str(merged_tiny)],
        "name the served model it stands in for with --teacher": [
            "--causal_lm",
            str(tiny_model_dir),
            "--dataset",
            demo_dataset,
        ],
        "tokenise differently": [
            "--causal_lm",
            str(other_vocabulary),
            "--teacher",
            str(merged_tiny),
            "--dataset",
            demo_dataset,
        ],
        "has no 'holdout' split": [
            "--causal_lm",
            str(merged_tiny),
            "--dataset",
            demo_dataset,
            "--agreement_split",
            "holdout",
        ],
        "--min_label_agreement 1.5 must be between 0 and 1": [
            "--causal_lm",
            str(merged_tiny),
            "--dataset",
            demo_dataset,
            "--min_label_agreement",
            "1.5",
        ],
        "--agreement_limit 0 must be at least 1": [
            "--causal_lm",
            str(merged_tiny),
            "--dataset",
            demo_dataset,
            "--agreement_limit",
            "0",
        ],
    }
    for message, args in cases.items():
        assert main([*base, *args]) == 2, message
        err = capsys.readouterr().err
        assert message in err, (message, err)
        assert "conversion" not in err and not out.exists()
    shutil.rmtree(other_vocabulary)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]
