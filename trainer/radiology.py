"""Multimodal (Gemma-3 image-text, the MedGemma-4B architecture) LoRA/QLoRA on a prepared radiology dataset
(`python -m trainer --config configs/radiology_qlora.yaml`, `modality: image_text`).

Only the language model's projections get adapters; the vision tower and the projector stay frozen (and, for
QLoRA, unquantised). Each record is one Gemma-3 turn: `<start_of_image>` + the task's prompt, answered with
the task's answer line (`Bone age: 60`, `Plus disease: yes`, `Fracture: no`); the loss is on the answer only.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hai_tools.errors import DatasetError
from hai_tools.radiology import turn

log = logging.getLogger("trainer")
RADIOLOGY_COLUMNS = ("image", "task", "prompt", "answer")


def language_model_targets(names: list[str]) -> str:
    """A peft regex that puts adapters on the language model's modules only (never the vision tower)."""
    return rf".*language_model.*\.({'|'.join(names)})$"


def _batch(processor: Any, rows: list[dict[str, Any]], max_length: int) -> dict[str, Any]:

    texts = [turn(r["prompt"], r["answer"]) for r in rows]
    prompts = [turn(r["prompt"]) for r in rows]
    images = [[r["image"].convert("RGB")] for r in rows]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    prompt_lengths = [
        len(processor(text=[p], images=[i], return_tensors="pt")["input_ids"][0])
        for p, i in zip(prompts, images, strict=True)
    ]
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for i, length in enumerate(prompt_lengths):
        labels[i, :length] = -100
    batch["labels"] = labels[:, :max_length]
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in batch:
            batch[key] = batch[key][:, :max_length]
    return dict(batch) | {"labels": batch["labels"]}


def load_image_text_model(path: str, method: str) -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    if method == "qlora":
        from trainer.quantization import load_4bit

        return load_4bit(AutoModelForImageTextToText, path, image_text=True, dtype=torch.float32)
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)


def train_image_text(config: Any, store: Any) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, set_seed

    from hai_tools.manifest import atomic_folder, write_manifest
    from hai_tools.models import resolve_base_model
    from hai_tools.registry.datasets import load_registered
    from trainer.card import render_adapter_card
    from trainer.lint import lint_for_vllm
    from trainer.train import _adapter_manifest, _register_adapter, run_dir_for

    record, splits = load_registered(store, config.dataset)
    if "train" not in splits:
        raise DatasetError(f"{record.ref} has no 'train' split (has: {', '.join(splits)})")
    missing = [c for c in RADIOLOGY_COLUMNS if c not in splits["train"].column_names]
    if missing:
        raise DatasetError(f"{record.ref} lacks {missing}: prepare it with `trainer data prepare-radiology`")
    base = resolve_base_model(config.base_model_id)
    findings = lint_for_vllm(config)
    run_dir = run_dir_for(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed, deterministic=True)
    processor = AutoProcessor.from_pretrained(base.path)
    model = load_image_text_model(base.path, config.method)
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=language_model_targets(config.target_modules),
        ),
    )
    frozen_vision = all(
        not p.requires_grad for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal" in n
    )
    if not frozen_vision:
        raise DatasetError("internal: the vision tower must stay frozen")
    train = splits["train"]
    if config.max_train_samples:
        train = train.select(range(min(config.max_train_samples, len(train))))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    steps = (
        config.max_steps
        if config.max_steps > 0
        else int(config.num_train_epochs * len(train) // config.per_device_train_batch_size)
    )
    started, losses = time.monotonic(), []
    model.train()
    from tqdm.auto import tqdm

    for step in tqdm(range(max(steps, 1)), desc="image-text LoRA", unit="step"):
        index = torch.randint(
            0, len(train), (config.per_device_train_batch_size,), generator=generator
        ).tolist()
        batch = _batch(processor, [train[i] for i in index], config.max_length)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if (step + 1) % config.logging_steps == 0:
            log.info('step %d: {"loss": %.4f}', step + 1, losses[-1])
    train_seconds = time.monotonic() - started
    model.eval()
    metrics: dict[str, Any] = {"train_loss": sum(losses[-5:]) / len(losses[-5:]), "global_step": len(losses)}
    if "validation" in splits:
        val = splits["validation"]
        rows = [val[i] for i in range(min(config.max_eval_samples or len(val), len(val)))]
        with torch.no_grad():
            metrics["eval_loss"] = sum(
                float(model(**_batch(processor, [r], config.max_length)).loss) for r in rows
            ) / max(len(rows), 1)
    log.info("metrics: %s", json.dumps(metrics))
    output_dir = Path(config.output_dir)
    with atomic_folder(output_dir) as tmp:
        model.save_pretrained(str(tmp))
        adapter_config = json.loads((tmp / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base.id
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(render_adapter_card(config, base, record, metrics, findings))
        manifest = _adapter_manifest(config, base, record, metrics, findings, train_seconds, None, run_dir)
        manifest.extra["modality"] = "image_text"
        manifest.extra["vision_tower"] = "frozen (no adapters, not quantised)"
        write_manifest(tmp, manifest)
    _register_adapter(store, config, output_dir / "manifest.json")
    return output_dir.resolve()
