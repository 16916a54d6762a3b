"""The DP-SGD mechanics themselves, on the tiny Gemma-3 with LoRA through Opacus, each in a form that can fail:
an example's per-sample gradient does not depend on the other examples of its batch (and the old token mean over
the batch, fed the same batches, does); with no noise and a clip above every gradient DP-SGD equals plain SGD
on the same batches (and a small clip does not); the added noise has standard deviation sigma x C / batch within
10%; two accountants agree on epsilon within the stated tolerance; the patient cap and the patient-level epsilon
reach the manifest and the card."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from hai_tools.errors import ConfigError
from hai_tools.manifest import verify_artifact
from trainer.config import TrainConfig
from trainer.dp import (
    _tensors,
    _tokenize,
    epsilon_for,
    group_privacy,
    make_private,
    patient_cap,
    per_example_losses,
)
from trainer.train import train

RECORDS = [
    {
        "prompt": [{"role": "user", "content": "Child 18 months, walks, no words."}],
        "completion": [{"role": "assistant", "content": "Label: monitor"}],
    },
    {
        "prompt": [{"role": "user", "content": "Child 12 months."}],
        "completion": [{"role": "assistant", "content": "Label: on-track"}],
    },
    {
        "prompt": [
            {"role": "user", "content": "Child 30 months, speaks in sentences, runs, climbs, draws lines."}
        ],
        "completion": [
            {"role": "assistant", "content": "Label: on-track, with a longer answer than the others"}
        ],
    },
    {
        "prompt": [{"role": "user", "content": "Child 24 months, no two-word phrases."}],
        "completion": [{"role": "assistant", "content": "Label: refer"}],
    },
]


def _lora(tiny_model_dir: Path) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
    )
    peft = get_peft_model(model, config)
    for name, param in peft.named_parameters():  # lora_B starts at zero: give it values so every grad is live
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    return peft, AutoTokenizer.from_pretrained(tiny_model_dir)


def _batches(tokenizer: Any, order: list[int], batch: int) -> Any:
    from torch.utils.data import DataLoader

    rows = _tokenize([RECORDS[i] for i in order], tokenizer, 128)
    return DataLoader(_tensors(rows, tokenizer.pad_token_id), batch_size=batch, shuffle=False)


def _lora_params(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _sample_grads(model: Any, tokenizer: Any, order: list[int], loss_fn: Any) -> dict[str, torch.Tensor]:
    """Opacus' per-sample gradients of the first example of the batch `order`."""
    private, optimizer, _, _ = make_private(
        copy.deepcopy(model),
        _batches(tokenizer, order, len(order)),
        0.0,
        1e6,
        "sgd",
        0.1,
        poisson_sampling=False,
    )
    ids, mask, labels = next(iter(_batches(tokenizer, order, len(order))))
    optimizer.zero_grad()
    loss_fn(private, ids, mask, labels).backward()
    grads = {n: p.grad_sample[0].clone() for n, p in private.named_parameters() if p.requires_grad}
    private._close()
    return grads


def _token_mean_over_batch(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """The old loss: one token mean over the whole batch (each example weighted by the others' lengths)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def test_an_examples_gradient_does_not_depend_on_the_rest_of_its_batch(tiny_model_dir: Path) -> None:
    model, tokenizer = _lora(tiny_model_dir)

    def gap(loss_fn: Any) -> float:
        short = _sample_grads(model, tokenizer, [0, 1], loss_fn)  # example 0 beside a short example
        long = _sample_grads(model, tokenizer, [0, 2], loss_fn)  # ... beside a long one
        return max(float((short[n] - long[n]).abs().max() / short[n].abs().max()) for n in short)

    def per_example_mean(m: Any, ids: Any, mask: Any, labels: Any) -> Any:
        return per_example_losses(m, ids, mask, labels).mean()

    assert gap(per_example_mean) < 1e-5
    assert gap(_token_mean_over_batch) > 0.05  # the check sees the old loss's dependence


def _train_steps(
    model: Any, tokenizer: Any, noise: float, clip: float | None, steps: int
) -> dict[str, torch.Tensor]:
    """`steps` SGD steps over fixed batches of 2: through Opacus when `clip` is set, else plain torch."""
    model = copy.deepcopy(model)
    loader = _batches(tokenizer, [0, 1, 2, 3] * 2, 2)
    if clip is None:
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        model.train()
        net = model
    else:
        net, optimizer, loader, _ = make_private(
            model, loader, noise, clip, "sgd", 0.5, poisson_sampling=False
        )
    for step, (ids, mask, labels) in enumerate(loader):
        if step == steps:
            break
        optimizer.zero_grad()
        per_example_losses(net, ids, mask, labels).mean().backward()
        optimizer.step()
    return _lora_params(net._module if clip is not None else net)


def test_no_noise_and_a_loose_clip_is_plain_sgd_and_a_tight_clip_is_not(tiny_model_dir: Path) -> None:
    model, tokenizer = _lora(tiny_model_dir)
    start = _lora_params(model)
    plain = _train_steps(model, tokenizer, 0.0, None, 3)
    moved = max(float((plain[n] - start[n]).abs().max()) for n in plain)
    assert moved > 1e-4

    def gap(other: dict[str, torch.Tensor]) -> float:
        return max(float((other[n.replace("_module.", "")] - plain[n]).abs().max()) for n in plain) / moved

    loose = _train_steps(model, tokenizer, 0.0, 1e6, 3)
    tight = _train_steps(model, tokenizer, 0.0, 1e-4, 3)
    assert gap(loose) < 1e-4, gap(loose)
    assert gap(tight) > 0.1  # the comparison sees clipping


def test_the_noise_has_the_expected_standard_deviation(tiny_model_dir: Path) -> None:
    model, tokenizer = _lora(tiny_model_dir)
    sigma, clip, batch = 1.0, 0.5, 4
    torch.manual_seed(1)

    def final_grads(noise: float) -> dict[str, torch.Tensor]:
        private, optimizer, loader, _ = make_private(
            copy.deepcopy(model),
            _batches(tokenizer, [0, 1, 2, 3], batch),
            noise,
            clip,
            "sgd",
            0.1,
            poisson_sampling=False,
        )
        ids, mask, labels = next(iter(loader))
        optimizer.zero_grad()
        per_example_losses(private, ids, mask, labels).mean().backward()
        assert optimizer.pre_step()  # clip, accumulate, add noise, scale by the batch: what step() applies
        return {n: p.grad.clone() for n, p in private.named_parameters() if p.requires_grad}

    noised, clean = final_grads(sigma), final_grads(0.0)
    difference = torch.cat([(noised[n] - clean[n]).flatten() for n in noised])
    expected = sigma * clip / batch
    assert difference.numel() > 1500  # the std of ~1800 normal draws is known to about 2%
    assert abs(float(difference.std()) / expected - 1) < 0.10, (float(difference.std()), expected)


def test_two_accountants_agree_on_epsilon() -> None:
    """PRV is numerically tight, RDP an upper bound: PRV <= RDP <= 1.35 PRV in these regimes (stated tolerance)."""
    for noise, rate, steps in ((1.0, 0.01, 1000), (1.2, 0.05, 300), (0.8, 0.004, 2000)):
        rdp, prv = (epsilon_for(a, noise, rate, steps, 1e-5) for a in ("rdp", "prv"))
        assert prv <= rdp <= 1.35 * prv, (noise, rate, steps, rdp, prv)


def test_patient_cap_and_group_privacy() -> None:
    patients = ["a", "a", "a", "b", "c", "c"]
    kept, k = patient_cap(patients, 1, seed=3)
    assert k == 1 and sorted(patients[i] for i in kept) == ["a", "b", "c"]
    kept, k = patient_cap(patients, None, seed=3)
    assert k == 3 and kept == list(range(6))
    assert group_privacy(2.0, 1e-6, 1) == (2.0, 1e-6)
    epsilon, delta = group_privacy(1.0, 1e-6, 3)
    assert epsilon == 3.0 and delta == pytest.approx(3 * 2.718281828**2 * 1e-6)
    assert group_privacy(1e6, 1e-6, 2) == (2e6, 1.0)  # a vacuous delta is capped at 1, not an overflow


def test_the_patient_level_guarantee_reaches_the_manifest_and_card(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path
) -> None:
    def config(out: Path, **changes: object) -> TrainConfig:
        values: dict[str, object] = {
            "base_model_id": str(tiny_model_dir),
            "dataset": demo_dataset,
            "adapter_name": out.name,
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "max_length": 128,
            "max_eval_samples": 4,
            "dp": True,
            "dp_target_epsilon": 4.0,
            "dp_optimizer": "sgd",
            **changes,
        }
        return TrainConfig.model_validate(values)

    capped = verify_artifact(train(config(tmp_path / "capped", dp_max_records_per_patient=1)))
    privacy = capped.extra["differential_privacy"]
    assert privacy["unit"] == "one training record"
    assert privacy["patient_level"]["max_records_per_patient"] == 1 and privacy["patient_level"]["capped"]
    assert privacy["patient_level"]["epsilon"] == privacy["epsilon"]
    assert privacy["optimizer"] == "sgd"
    cross = privacy["cross_check"]
    assert (
        cross["accountant"] == "rdp" and privacy["epsilon"] <= cross["epsilon"] <= 1.35 * privacy["epsilon"]
    )
    card = (tmp_path / "capped" / "README.md").read_text()
    assert "unit of privacy: one training record" in card and "at most 1 records per patient" in card

    whole = verify_artifact(train(config(tmp_path / "whole")))
    level = whole.extra["differential_privacy"]["patient_level"]
    assert level["max_records_per_patient"] > 1 and not level["capped"]
    assert level["epsilon"] == pytest.approx(
        level["max_records_per_patient"] * whole.extra["differential_privacy"]["epsilon"], rel=1e-3
    )
    assert whole.extra["differential_privacy"]["training_records"] > privacy["training_records"]


def test_a_patient_cap_without_a_patient_column_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from trainer.dp import train_dp

    model, tokenizer = _lora(tiny_model_dir)
    config = TrainConfig.model_validate(
        {
            "base_model_id": str(tiny_model_dir),
            "dataset": "x@1",
            "output_dir": str(tmp_path / "o"),
            "dp": True,
            "dp_max_records_per_patient": 2,
            "dp_delta": 1e-3,
        }
    )
    with pytest.raises(ConfigError, match="needs the dataset's patient id column"):
        train_dp(config, model, tokenizer, RECORDS, None, patients=None)


def test_a_patient_cap_on_a_dataset_without_patient_ids_is_refused_before_anything_is_written(
    tiny_model_dir: Path, demo_files: dict[str, Path], tmp_path: Path
) -> None:
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import register_dataset
    from trainer.train import run_dir_for

    ref = register_dataset(
        open_registry(),
        "demo-no-patients@1",
        files=demo_files,
        license="CC0-1.0",
        deid_attestation="synthetic",
    ).ref
    config = TrainConfig.model_validate(
        {
            "base_model_id": str(tiny_model_dir),
            "dataset": ref,
            "adapter_name": "capped-no-ids",
            "output_dir": str(tmp_path / "never"),
            "dp": True,
            "dp_max_records_per_patient": 1,
        }
    )
    with pytest.raises(ConfigError, match="needs the dataset's patient id column"):
        train(config)
    assert not (tmp_path / "never").exists() and not run_dir_for(config).exists()
