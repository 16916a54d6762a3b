"""DP-SGD for LoRA through Opacus (`--dp`): per-example gradients of the LoRA weights only (the base stays
frozen), clipped to `dp_max_grad_norm` and noised; Poisson sampling; the noise multiplier is solved for
`dp_target_epsilon` at `dp_delta` over the run's steps with the chosen accountant, and the epsilon spent is
read back from the accountant. The guarantee is example-level (one training record); the plan and its
limits are in docs/dp_plan.md.
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


def _loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def train_dp(
    config: Any, model: Any, tokenizer: Any, train_data: Any, eval_data: Any
) -> tuple[Any, dict[str, Any]]:
    """Train the peft `model` with DP-SGD; returns the trained peft model and the metrics (with privacy)."""
    import torch
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    rows = _tokenize(train_data, tokenizer, config.max_length)
    n = len(rows)
    delta = resolve_delta(config, n)
    batch = config.per_device_train_batch_size
    sample_rate = batch / n
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
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    engine = PrivacyEngine(accountant=config.dp_accountant)
    model.train()
    private_model, optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=config.dp_max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode="hooks",
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
    privacy = {
        "mechanism": "DP-SGD (Opacus), example-level, Poisson sampling",
        "epsilon": round(epsilon, 4),
        "delta": delta,
        "target_epsilon": config.dp_target_epsilon,
        "accountant": config.dp_accountant,
        "max_grad_norm": config.dp_max_grad_norm,
        "noise_multiplier": round(float(noise), 6),
        "sample_rate": sample_rate,
        "steps": step,
        "training_records": n,
        "trained_parameters": "LoRA weights only (base model frozen)",
        "secure_rng": False,
    }
    log.info("DP-SGD done: epsilon %.3f at delta %.2e", epsilon, delta)
    return trained, {**metrics, "differential_privacy": privacy}
