"""DP-SGD for LoRA through Opacus (`--dp`): per-example gradients of the LoRA weights only (the base stays
frozen), clipped to `dp_max_grad_norm` and noised; Poisson sampling; the noise multiplier is solved for
`dp_target_epsilon` at `dp_delta` over the run's steps with the chosen accountant, and the epsilon spent is
read back from the accountant (and cross-checked with a second accountant).

Each example's loss is its own token mean and the batch loss their mean (Opacus' `loss_reduction="mean"`), so
one example's clipped gradient never depends on another example (a token mean over the whole batch would
scale each example by the others' lengths, which the per-example sensitivity analysis does not allow).

Unit of privacy: one training record. With the dataset's registered patient id column the trainer keeps at
most k records per patient (`dp_max_records_per_patient`, or k = the most any patient has) and states the
patient-level guarantee by group privacy: (k epsilon, k e^((k-1) epsilon) delta). The plan and its limits are in
docs/dp_plan.md.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from hai_tools.errors import ConfigError

log = logging.getLogger("trainer")


def check_dp_config(config: Any) -> None:
    """What DP mode does not support, refused before anything is loaded or written."""
    if config.method != "lora":
        raise ConfigError("--dp supports method lora only (QLoRA's 4-bit layers are not audited with Opacus)")
    if config.modules_to_save:
        raise ConfigError("--dp trains LoRA weights only: modules_to_save is not allowed")
    if config.gradient_accumulation_steps != 1:
        raise ConfigError("--dp uses Poisson-sampled batches: set gradient_accumulation_steps to 1")
    if config.resume:
        raise ConfigError("--dp runs cannot --resume (the accountant's state is not checkpointed)")
    if config.use_dora:
        raise ConfigError("--dp does not support DoRA")


def resolve_delta(config: Any, n: int) -> float:
    """delta: the configured one, or 1/(10 N); it must be below 1/N to mean anything."""
    delta = float(config.dp_delta) if config.dp_delta is not None else 1.0 / (10 * n)
    if delta >= 1.0 / n:
        raise ConfigError(f"--dp_delta {delta} must be below 1/N = {1 / n:.2e} for N={n} training records")
    return delta


def _tokenize(records: Any, tokenizer: Any, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Chat-template tokens and completion-only labels (prompt tokens are -100), truncated."""
    rows = []
    for record in records:
        prompt_ids = list(
            tokenizer.apply_chat_template(
                record["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        full = tokenizer.apply_chat_template(
            record["prompt"] + record["completion"], tokenize=True, return_dict=True
        )
        ids = list(full["input_ids"])[:max_length]
        labels = [-100] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids) :]
        rows.append((ids, labels[: len(ids)]))
    return rows


def _tensors(rows: list[tuple[list[int], list[int]]], pad_id: int) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return TensorDataset(ids, mask, labels)


def per_example_losses(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Each example's mean token loss over its own completion tokens (shape: batch)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
    )
    counts = (target != -100).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts


def _loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """The batch loss: the mean of per-example losses (matches Opacus' loss_reduction='mean')."""
    return per_example_losses(model, ids, mask, labels).mean()


def make_private(
    model: Any,
    loader: Any,
    noise: float,
    max_grad_norm: float,
    optimizer: str,
    learning_rate: float,
    weight_decay: float = 0.0,
    accountant: str = "prv",
    poisson_sampling: bool = True,
) -> tuple[Any, Any, Any, Any]:
    """Opacus' private model, optimizer, loader and engine for the trainable parameters of `model`."""
    import torch
    from opacus import PrivacyEngine

    params = [p for p in model.parameters() if p.requires_grad]
    base: Any = (
        torch.optim.SGD(params, lr=learning_rate)
        if optimizer == "sgd"
        else torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    )
    engine = PrivacyEngine(accountant=accountant)
    model.train()
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=base,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=max_grad_norm,
        poisson_sampling=poisson_sampling,
        grad_sample_mode="hooks",
        loss_reduction="mean",
    )
    return private_model, private_optimizer, private_loader, engine


def epsilon_for(accountant: str, noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of `steps` Poisson-sampled steps at this noise, by the named Opacus accountant."""
    from opacus.accountants import create_accountant

    counter = create_accountant(accountant)
    counter.history = [(noise, sample_rate, steps)]
    return float(counter.get_epsilon(delta))


CROSS_CHECK = {"prv": "rdp", "rdp": "prv", "gdp": "rdp"}
# Below this noise multiplier (budgets of hundreds of epsilon) the PRV accountant's discretisation grid grows
# without bound (it exhausted 24 GiB at epsilon 1e6): the cross-check is skipped there, and says so.
CROSS_CHECK_MIN_NOISE = 0.3


def cross_check(
    accountant: str, noise: float, sample_rate: float, steps: int, delta: float
) -> dict[str, Any]:
    """Epsilon by a second accountant, to set beside the configured one's."""
    other = CROSS_CHECK[accountant]
    if noise < CROSS_CHECK_MIN_NOISE:
        return {
            "accountant": other,
            "epsilon": None,
            "skipped": f"noise multiplier {noise:.3g} < {CROSS_CHECK_MIN_NOISE}",
        }
    return {"accountant": other, "epsilon": round(epsilon_for(other, noise, sample_rate, steps, delta), 4)}


NO_PATIENT_COLUMN = "--dp_max_records_per_patient needs the dataset's patient id column (register it with --patient-id-column)"


def training_patients(config: Any, split: Any, column: str | None) -> list[str] | None:
    """Each training record's patient id (the registered column, over the records training uses), or None
    without one; a patient cap without the column is refused here, before anything is written."""
    if not column or column not in split.column_names:
        if config.dp_max_records_per_patient is not None:
            raise ConfigError(NO_PATIENT_COLUMN)
        return None
    values = split[column]
    limit = config.max_train_samples
    return [str(v) for v in (values[:limit] if limit else values)]


def patient_cap(patients: list[str], cap: int | None, seed: int) -> tuple[list[int], int]:
    """Indices of the records kept (at most `cap` per patient, chosen at random with `seed`) and k, the most
    records any one patient has among them."""
    import random
    from collections import defaultdict

    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, patient in enumerate(patients):
        by_patient[str(patient)].append(index)
    rng = random.Random(seed)
    kept: list[int] = []
    for indices in by_patient.values():
        kept.extend(indices if cap is None or len(indices) <= cap else rng.sample(indices, cap))
    kept.sort()
    k = max(len(v) if cap is None else min(len(v), cap) for v in by_patient.values())
    return kept, k


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(epsilon, delta)-DP for one record gives (k epsilon, k e^((k-1) epsilon) delta) for k records of one
    person (group privacy)."""
    exponent = (k - 1) * epsilon
    group_delta = 1.0 if exponent > 700 else min(1.0, k * math.exp(exponent) * delta)  # 1: no guarantee
    return k * epsilon, group_delta


def train_dp(
    config: Any,
    model: Any,
    tokenizer: Any,
    train_data: Any,
    eval_data: Any,
    patients: list[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train the peft `model` with DP-SGD; returns the trained peft model and the metrics (with privacy).
    `patients`: each training record's patient id (the registered column), for the patient-level guarantee."""
    import torch
    from opacus.accountants.utils import get_noise_multiplier
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    rows = _tokenize(train_data, tokenizer, config.max_length)
    k: int | None = None
    if patients is not None:
        kept, k = patient_cap(patients, config.dp_max_records_per_patient, config.seed)
        if len(kept) < len(rows):
            log.info("DP-SGD: %d of %d records kept (at most %d per patient)", len(kept), len(rows), k)
        rows = [rows[i] for i in kept]
    elif config.dp_max_records_per_patient is not None:
        raise ConfigError(NO_PATIENT_COLUMN)
    n = len(rows)
    delta = resolve_delta(config, n)
    batch = config.per_device_train_batch_size
    # the rate Opacus' Poisson sampler draws with and its accountant charges: one over the loader's batches per
    # epoch, below batch / n when n is not a multiple of the batch (the noise is calibrated at this rate)
    sample_rate = 1 / math.ceil(n / batch)
    steps = (
        config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.num_train_epochs * n / batch))
    )
    noise = get_noise_multiplier(
        target_epsilon=config.dp_target_epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=config.dp_accountant,
    )
    log.info(
        "DP-SGD: target epsilon %.3g at delta %.2e, %d steps, sample rate %.4f -> noise multiplier %.4f",
        config.dp_target_epsilon,
        delta,
        steps,
        sample_rate,
        noise,
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        _tensors(rows, tokenizer.pad_token_id), batch_size=batch, shuffle=True, generator=generator
    )
    private_model, optimizer, private_loader, engine = make_private(
        model,
        loader,
        noise,
        config.dp_max_grad_norm,
        config.dp_optimizer,
        config.learning_rate,
        config.weight_decay,
        config.dp_accountant,
    )
    losses: list[float] = []
    step = 0
    progress = tqdm(total=steps, desc="DP-SGD", unit="step")
    while step < steps:
        for ids, mask, labels in private_loader:
            if step >= steps:
                break
            optimizer.zero_grad(set_to_none=True)
            if len(ids):  # a Poisson batch can be empty: the step still spends (and adds) noise
                loss = _loss(private_model, ids, mask, labels)
                loss.backward()
                losses.append(float(loss))
            optimizer.step()
            step += 1
            progress.update(1)
            if step % config.logging_steps == 0 and losses:
                log.info(
                    'step %d: {"loss": %.4f, "epsilon": %.4f}', step, losses[-1], engine.get_epsilon(delta)
                )
    progress.close()
    epsilon = float(engine.get_epsilon(delta))
    trained = private_model._module
    private_model._close()
    trained.eval()
    metrics: dict[str, Any] = {
        "train_loss": float(sum(losses[-10:]) / max(len(losses[-10:]), 1)),
        "global_step": step,
    }
    if eval_data is not None:
        eval_rows = _tokenize(eval_data, tokenizer, config.max_length)
        eval_set = _tensors(eval_rows, tokenizer.pad_token_id)
        with torch.no_grad():
            total = [
                float(_loss(trained, ids, mask, labels))
                for ids, mask, labels in DataLoader(eval_set, batch_size=config.per_device_eval_batch_size)
            ]
        metrics["eval_loss"] = sum(total) / len(total)
    privacy: dict[str, Any] = {
        "mechanism": "DP-SGD (Opacus), per-example loss (own token mean), Poisson sampling",
        "unit": "one training record",
        "epsilon": round(epsilon, 4),
        "delta": delta,
        "target_epsilon": config.dp_target_epsilon,
        "accountant": config.dp_accountant,
        "cross_check": cross_check(config.dp_accountant, float(noise), sample_rate, step, delta),
        "optimizer": config.dp_optimizer,
        "max_grad_norm": config.dp_max_grad_norm,
        "noise_multiplier": round(float(noise), 6),
        "sample_rate": sample_rate,
        "steps": step,
        "training_records": n,
        "trained_parameters": "LoRA weights only (base model frozen)",
        "secure_rng": False,
        "patient_level": None,
    }
    if k is not None:
        patient_epsilon, patient_delta = group_privacy(epsilon, delta, k)
        privacy["patient_level"] = {
            "max_records_per_patient": k,
            "capped": config.dp_max_records_per_patient is not None,
            "epsilon": round(patient_epsilon, 4),
            "delta": patient_delta,
            "by": "group privacy: (k epsilon, k e^((k-1) epsilon) delta)",
        }
    log.info("DP-SGD done: epsilon %.3f at delta %.2e", epsilon, delta)
    return trained, {**metrics, "differential_privacy": privacy}
