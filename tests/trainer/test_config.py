"""Config precedence (defaults < YAML < flags), strict keys, and the vLLM servability lint."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hai_tools.errors import ConfigError
from trainer.config import TrainConfig, add_config_flags, load_config
from trainer.lint import lint_for_vllm, servable_unmerged


def _parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return load_config(parser.parse_args(argv))


def test_flags_override_yaml_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lora_r: 4\nlearning_rate: 1.0e-3\ntarget_modules: [q_proj]\n")
    config = _parse(["--config", str(path), "--lora_r", "32", "--smoke_test"])
    assert (config.lora_r, config.learning_rate, config.target_modules) == (32, 1e-3, ["q_proj"])
    assert config.per_device_train_batch_size == TrainConfig().per_device_train_batch_size
    assert config.smoke_test is True


def test_seed_flags_of_the_original_script_still_work() -> None:
    config = _parse(
        [
            "--base_model_id",
            "gpt2",
            "--adapter_name",
            "example_adapter",
            "--output_dir",
            "o",
            "--smoke_test",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "4",
        ]
    )
    assert (config.base_model_id, config.adapter_name, config.num_train_epochs) == (
        "gpt2",
        "example_adapter",
        1.0,
    )


@pytest.mark.parametrize(
    ("yaml_text", "error"),
    [
        ("lora_rank: 4\n", "lora_rank"),
        ("lora_r: -1\n", "lora_r"),
        ("method: full\n", "method"),
        ("- a list\n", "mapping"),
        ("adapter_name: 'a b'\n", "adapter_name"),
        ("x: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path: Path, yaml_text: str, error: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=error) as err:
        _parse(["--config", str(path)])
    assert "\n" not in str(err.value)


def test_smoke_test_shrinks_the_run() -> None:
    config = TrainConfig(smoke_test=True).effective()
    assert config.max_steps == 10 and config.max_train_samples == 32 and config.save_steps <= 10


def test_default_lora_is_servable_unmerged() -> None:
    assert lint_for_vllm(TrainConfig()) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj", "vision_tower.encoder.layers.0.self_attn.q_proj"]}, "vision_target"),
        ({"target_modules": ["embed_tokens"]}, "embedding_target"),
        ({"use_dora": True}, "dora"),
    ],
)
def test_lint_flags_adapters_vllm_cannot_serve_unmerged(change: dict[str, object], code: str) -> None:
    findings = lint_for_vllm(TrainConfig(**change))  # type: ignore[arg-type]
    assert [f.code for f in findings] == [code]
    assert not servable_unmerged(findings)


def test_large_rank_needs_a_serve_flag_only() -> None:
    findings = lint_for_vllm(TrainConfig(lora_r=48))
    assert "--max-lora-rank 64" in findings[0].message
    assert servable_unmerged(findings)
