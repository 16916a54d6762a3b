"""Smoke test on the real embedded Gemma 3 270M (about 2 minutes on 2 CPU cores, plus 1-2 minutes once per
machine to dequantise the GGUF): the demo config, cut to two steps, writes a verified adapter that changes
the model's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from hai_tools.manifest import content_hash, verify_artifact
from hai_tools.models import resolve_base_model
from trainer.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_config_on_gemma_270m(demo_dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "screening-lora"
    code = main(
        [
            "--config",
            str(ROOT / "configs/demo_lora.yaml"),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--max_length",
            "160",
            "--eval_steps",
            "2",
            "--save_steps",
            "2",
            "--max_eval_samples",
            "4",
        ]
    )
    assert code == 0
    manifest = verify_artifact(out, kind="adapter")
    base = manifest.input("base_model")
    assert base.name == "embedded:gemma-3-270m"
    # the base is known by its dequantised files and the packaged GGUF they came from (pinned here), not by when
    # or where it was materialised
    cached = verify_artifact(Path(resolve_base_model("embedded:gemma-3-270m").path), kind="base_model")
    assert (
        cached.input("gguf").hash == "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )
    assert base.hash == content_hash(
        cached.files | {"input:gguf:" + cached.inputs[0].name: cached.inputs[0].hash}
    )
    assert manifest.metrics["adapter_output_delta_max_abs"] > 1e-4
    assert manifest.metrics["eval_loss"] < 20


@pytest.mark.slow
def test_demo_qlora_config_on_gemma_270m(demo_dataset: str, tmp_path: Path, test_mode: str) -> None:
    """QLoRA on the real 270M with evaluation during training (no-grad forwards between steps): the 4-bit path
    must learn on any CPU, with or without AVX512-BF16/AMX (about 1 minute quick; the config's 40 steps full)."""
    out = tmp_path / "screening-qlora"
    args = ["--config", str(ROOT / "configs/demo_qlora.yaml"), "--output_dir", str(out)]
    if test_mode == "quick":
        args += ["--max_steps", "4", "--per_device_train_batch_size", "2", "--max_length", "160"]
        args += [
            "--eval_steps",
            "2",
            "--save_steps",
            "4",
            "--max_eval_samples",
            "4",
            "--learning_rate",
            "1e-3",
        ]
    assert main(args) == 0
    manifest = verify_artifact(out, kind="adapter")
    assert manifest.extra["method"] == "qlora"
    assert manifest.metrics["adapter_output_delta_max_abs"] > 1e-4
