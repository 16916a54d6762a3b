"""The radiology yes/no scorer measures what the model sees: on a synthetic task whose label is visible in the
image (a bright disc on the "yes" images), a tiny image-text model trained with the image-text LoRA trainer
reaches ROP and fracture AUC >= 0.9 on held-out patients; trained on the same images with the labels shuffled,
AUC stays within 0.5 +/- 0.15. A constant scorer would fail the first assertion."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from evals.__main__ import main as evals_main
from tests.radiology.test_prepare import make_raw
from trainer.__main__ import main as trainer_main


def _image(path: Path, visible: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((32, 32)) * 90).astype(np.uint8)  # noise background
    image = Image.fromarray(pixels, "L")
    if visible:
        x, y = rng.integers(4, 16, 2)
        ImageDraw.Draw(image).ellipse([int(x), int(y), int(x) + 12, int(y) + 12], fill=255)
    image.save(path)


def _dataset(base: Path, name: str, shuffled: bool) -> str:
    rows, labels = [], []
    for i in range(160):
        labels.append(i % 2)
    shown = list(labels)
    if shuffled:  # the image shows one thing, the label says another at random
        random.Random(7).shuffle(labels)
    raw = base / f"raw-{name}"
    (raw / "xr").mkdir(parents=True)
    for i, (label, visible) in enumerate(zip(labels, shown, strict=True)):
        file = f"xr/img{i:03d}.png"
        _image(raw / file, bool(visible), i)
        rows.append(
            {
                "file": file,
                "task": "rop" if i % 4 < 2 else "fracture",
                "label": float(label),
                "sex": "FM"[i % 2],
                "age_months": 6 + (i * 7) % 200,
                "site": f"site-{i % 3}",
                "patient_id": f"MRN-{i // 2:04d}",
                "split": "test" if i >= 128 else "train",
            }
        )
    make_raw(raw, rows)
    ref = f"visible-{name}@1"
    args = ["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(base / f"prep-{name}")]
    args += ["--image_size", "32", "--register", ref, "--deid-attestation", "test: synthetic"]
    assert trainer_main(args) == 0
    return ref


def _auc_after_training(tiny_vlm: Path, dataset: str, out: Path) -> dict[str, float]:
    args = ["--modality", "image_text", "--base_model_id", str(tiny_vlm), "--dataset", dataset]
    args += ["--adapter_name", out.name, "--output_dir", str(out / "adapter"), "--method", "lora"]
    args += ["--max_steps", "120", "--per_device_train_batch_size", "8", "--learning_rate", "0.01"]
    args += ["--max_length", "96", "--lora_r", "8", "--seed", "0"]
    assert trainer_main(args) == 0
    from export.__main__ import main as export_main

    assert export_main(["merge", str(out / "adapter"), "--output_dir", str(out / "merged")]) == 0
    report = out / "report"
    args = [
        "radiology",
        str(out / "merged"),
        "--dataset",
        dataset,
        "--split",
        "test",
        "--output_dir",
        str(report),
    ]
    assert evals_main([*args, "--n_resamples", "50", "--min_group_size", "2"]) == 0
    metrics = json.loads((report / "report.json").read_text())["metrics"]
    return {task: metrics[f"{task}_auc"]["value"] for task in ("rop", "fracture")}


@pytest.mark.slow
def test_a_visible_label_is_learned_and_a_shuffled_one_is_not(
    tiny_vlm: Path, hai_home: Path, tmp_path: Path
) -> None:
    learned = _auc_after_training(tiny_vlm, _dataset(tmp_path, "true", shuffled=False), tmp_path / "true")
    assert learned["rop"] >= 0.9 and learned["fracture"] >= 0.9, learned
    chance = _auc_after_training(
        tiny_vlm, _dataset(tmp_path, "shuffled", shuffled=True), tmp_path / "shuffled"
    )
    print(f"visible-label AUC {learned}; shuffled-label AUC {chance}")
    assert all(abs(v - 0.5) <= 0.15 for v in chance.values()), chance
