"""The radiology pipeline end to end on CPU: prepare-radiology on drawn images -> image-text LoRA (and QLoRA)
on a tiny random Gemma3ForConditionalGeneration (the MedGemma-4B architecture: SigLIP vision tower, projector,
Gemma-3 language model) -> merge (parity on text prompts) -> evals radiology (bone-age MAE, ROP AUC,
fracture F1 with CIs and subgroups) -> gate with the seed's targets (a random tiny model fails it, with
reasons). The vision tower is checked to be untouched by training."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from evals.__main__ import main as evals_main
from export.__main__ import main as export_main
from export.parity import max_abs_diff
from hai_tools.manifest import verify_artifact
from tests.radiology.test_prepare import make_raw
from trainer.__main__ import main as trainer_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pedirad(tmp_path_factory: pytest.TempPathFactory, hai_home: Path) -> str:
    """The drawn images with their splits given, not assigned from the per-run pseudonym salt: the train split holds
    patients MRN-000 to MRN-008, so its ROP rows (images 1, 4, ..., 16) hold both labels on every run."""
    base = tmp_path_factory.mktemp("pedirad")
    raw = make_raw(base / "raw")
    with (raw / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        number = int(row["patient_id"].removeprefix("MRN-"))
        row["split"] = "train" if number <= 8 else "validation" if number <= 10 else "test"
    make_raw(raw, rows)
    args = ["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(base / "prepared")]
    args += ["--image_size", "48", "--register", "pedirad-tiny@1", "--deid-attestation", "test: synthetic"]
    assert trainer_main(args) == 0
    return "pedirad-tiny@1"


def _train(tiny_vlm: Path, dataset: str, out: Path, method: str) -> Path:
    args = ["--modality", "image_text", "--base_model_id", str(tiny_vlm), "--dataset", dataset]
    args += ["--adapter_name", f"pedirad-{method}", "--output_dir", str(out), "--method", method]
    args += [
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "0.01",
        "--max_length",
        "96",
    ]
    assert trainer_main(args) == 0
    return out


def _text_logits(
    folder: Path, tokenizer_dir: Path, adapter: Path | None = None
) -> tuple[list[Any], list[Any]]:
    """Parity-prompt logits (float64) of the image-text model in `folder`, with `adapter` on it and without it,
    loaded from disk here, apart from the merge; the prompts tokenized as the merge does (the adapter's
    processor)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from export.parity import causal_logits, encode_prompts
    from hai_tools.models import gemma_chat_template

    tokenizer = AutoProcessor.from_pretrained(tokenizer_dir).tokenizer
    tokenizer.chat_template = tokenizer.chat_template or gemma_chat_template()
    batches = encode_prompts(tokenizer)
    model: Any = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    if adapter is None:
        return causal_logits(model.to(torch.float64), batches), []
    model = PeftModel.from_pretrained(model, str(adapter)).to(torch.float64)
    with model.disable_adapter():
        plain = causal_logits(model, batches)
    return causal_logits(model, batches), plain


def test_prep_train_merge_eval_gate(
    tiny_vlm: Path, pedirad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    adapter = _train(tiny_vlm, pedirad, tmp_path / "adapter", "lora")
    manifest = verify_artifact(adapter, kind="adapter")
    assert manifest.extra["modality"] == "image_text" and manifest.metrics["global_step"] == 4
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert weights and all("language_model" in k and "vision" not in k for k in weights)

    merged = tmp_path / "merged"
    assert export_main(["merge", str(adapter), "--output_dir", str(merged)]) == 0
    merged_manifest = verify_artifact(merged, kind="merged_model")
    # the recorded parity recomputed from the files: the stored merged model against a fresh load of the base
    # with the adapter, both in float64 on the export's text prompts, and the adapter's own effect beside it
    expected, plain = _text_logits(tiny_vlm, adapter, adapter)
    stored, _ = _text_logits(merged, adapter)
    figures = merged_manifest.metrics
    assert figures["parity_max_abs_logit_diff"] == pytest.approx(max_abs_diff(expected, stored), abs=1e-12)
    assert figures["adapter_effect_max_abs_logit_diff"] == pytest.approx(
        max_abs_diff(expected, plain), rel=1e-9
    )
    base_vision = load_file(str(tiny_vlm / "model.safetensors"))
    merged_weights = load_file(str(merged / "model.safetensors"))
    vision = [k for k in base_vision if "vision_tower" in k]
    assert vision and all((base_vision[k] == merged_weights[k]).all() for k in vision)  # vision tower frozen

    report = tmp_path / "report"
    args = ["radiology", str(merged), "--dataset", pedirad, "--split", "train", "--output_dir", str(report)]
    assert evals_main([*args, "--n_resamples", "50", "--min_group_size", "2"]) == 0
    data = json.loads((report / "report.json").read_text())
    metrics = data["metrics"]
    assert {"bone_age_mae", "bone_age_unparsed_rate", "rop_auc", "fracture_f1"} <= set(metrics)
    assert any(k.startswith("fracture_f1[sex=") for k in metrics)
    bands = {k.split("age_band=")[1].rstrip("]") for k in metrics if "[age_band=" in k}
    assert bands and bands <= {"0-2y", "2-6y", "6-12y", "12-18y"}  # bone-age bands, not screening months
    band_key = next(k for k in metrics if k.startswith("fracture_f1[age_band="))
    policy = tmp_path / "band_policy.yaml"  # a radiology policy can gate a subgroup's metric by name
    policy.write_text(f'split: train\nmin_group_size: 2\nmetrics:\n  "{band_key}": {{min: 1.01}}\n')
    capsys.readouterr()
    assert evals_main(["gate", str(report), "--policy", str(policy)]) == 1
    assert f"FAIL  {band_key} >= 1.01" in capsys.readouterr().out
    # the ROP AUC is that of the report's own predictions (sklearn's, recomputed); not 0.5, so a reversed score
    # (1 - AUC) would show
    rop = [row for row in data["predictions"] if row["task"] == "rop"]
    labels = [int(row["label"]) for row in rop]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1] and metrics["rop_auc"]["n"] == len(rop)
    expected = roc_auc_score(labels, [row["p_yes"] for row in rop])
    assert expected != pytest.approx(0.5)
    assert metrics["rop_auc"]["value"] == pytest.approx(expected)
    assert verify_artifact(report, kind="eval_report").inputs[0].kind == "merged_model"
    # the seed's targets: a random tiny model must fail, each failing check listed
    assert evals_main(["gate", str(report), "--policy", str(ROOT / "configs/gate_radiology.yaml")]) == 1


def test_qlora_trains_the_language_model_only(tiny_vlm: Path, pedirad: str, tmp_path: Path) -> None:
    adapter = _train(tiny_vlm, pedirad, tmp_path / "qlora", "qlora")
    manifest = verify_artifact(adapter, kind="adapter")
    assert manifest.config["method"] == "qlora" and manifest.extra["vision_tower"].startswith("frozen")
