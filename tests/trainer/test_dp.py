"""DP-SGD through Opacus on the tiny model: the adapter changes the model, the epsilon spent (read back from Opacus'
accountant) is at most the target and reaches the manifest, the adapter card and the release card's source;
clipping really bounds the update; unsupported combinations are refused before anything is written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hai_tools.manifest import verify_artifact
from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.train import train


def _config(tiny_model_dir: Path, dataset: str, out: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = {
        "base_model_id": str(tiny_model_dir),
        "dataset": dataset,
        "adapter_name": "tiny-dp",
        "output_dir": str(out),
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "max_length": 128,
        "max_eval_samples": 4,
        "learning_rate": 2e-2,
        "logging_steps": 2,
        "dp": True,
        "dp_target_epsilon": 4.0,
        "dp_max_grad_norm": 1.0,
        **changes,
    }
    return TrainConfig.model_validate(values)


def test_dp_sgd_adapter_records_its_privacy_budget(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path
) -> None:
    out = train(_config(tiny_model_dir, demo_dataset, tmp_path / "dp"))
    manifest = verify_artifact(out, kind="adapter")
    privacy = manifest.extra["differential_privacy"]
    # the epsilon recorded is what Opacus' PRV accountant gives for the recorded noise, sampling rate and steps,
    # recomputed here; the noise was chosen to spend the target budget, not exceed it (Opacus' tolerance 0.01)
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert privacy["sample_rate"] == 1 / math.ceil(privacy["training_records"] / 8)  # Opacus' Poisson rate
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(privacy["delta"]), abs=2e-3)
    assert 4.0 - 0.02 <= privacy["epsilon"] <= 4.0 + 1e-6, privacy["epsilon"]
    assert privacy["accountant"] == "prv" and privacy["max_grad_norm"] == 1.0
    assert privacy["noise_multiplier"] > 0 and privacy["steps"] == 6
    assert privacy["delta"] < 1 / privacy["training_records"]
    assert manifest.config["dp"] is True
    assert manifest.metrics["adapter_output_delta_max_abs"] > 0  # the adapter changed the model
    card = (out / "README.md").read_text()
    assert "DP-SGD through Opacus" in card and f"epsilon = {privacy['epsilon']}" in card


def test_clipping_bounds_each_update(tiny_model_dir: Path, demo_dataset: str, tmp_path: Path) -> None:
    """With a tiny clipping norm and a huge budget (almost no noise), one SGD-sized step barely moves the
    LoRA weights; the same step with a large norm moves them much more."""
    from safetensors.torch import load_file

    def update(norm: float, name: str) -> float:
        out = train(
            _config(
                tiny_model_dir,
                demo_dataset,
                tmp_path / name,
                max_steps=1,
                dp_target_epsilon=1e6,
                dp_max_grad_norm=norm,
                dp_accountant="rdp",
                lora_dropout=0.0,
            )
        )
        weights = load_file(str(out / "adapter_model.safetensors"))
        return float(sum(t.abs().sum() for k, t in weights.items() if "lora_B" in k))

    assert update(1e-6, "tight") < update(10.0, "loose")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "qlora"], "lora only"),
        (["--gradient_accumulation_steps", "2"], "gradient_accumulation_steps"),
        (["--resume"], "cannot --resume"),
        (["--dp_delta", "0.5"], "must be below 1/N"),
        (["--dp_target_epsilon", "-1"], "dp_target_epsilon"),
    ],
)
def test_unsupported_dp_runs_are_refused(
    flags: list[str],
    message: str,
    tiny_model_dir: Path,
    demo_dataset: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "refused"
    args = ["--base_model_id", str(tiny_model_dir), "--dataset", demo_dataset, "--output_dir", str(out)]
    args += ["--max_steps", "1", "--dp", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
