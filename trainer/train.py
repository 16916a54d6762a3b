"""One training run, top to bottom: resolve inputs, lint, load a fresh model, train with TRL, save the
adapter atomically with its card and manifest.

    python -m trainer --config configs/demo_lora.yaml --max_steps 5
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from hai_tools.errors import ConfigError, DatasetError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    atomic_write_text,
    code_version,
    library_versions,
    write_manifest,
)
from hai_tools.models import BaseModelRef, check_architecture, gemma_chat_template, resolve_base_model
from hai_tools.registry import DatasetRecord, open_registry
from hai_tools.registry.base import ArtifactStore
from hai_tools.registry.datasets import load_registered
from hai_tools.settings import runs_dir
from trainer.card import render_adapter_card
from trainer.config import TrainConfig
from trainer.lint import LintFinding, lint_for_vllm, servable_unmerged

log = logging.getLogger("trainer")

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "safetensors",
    "tokenizers",
    "hai-tools",
)
SFT_COLUMNS = ("prompt", "completion")


def run_dir_for(config: TrainConfig) -> Path:
    """Checkpoints and logs of a run live under $HAI_HOME/runs, keyed by the output folder."""
    key = hashlib.sha256(str(Path(config.output_dir).resolve()).encode()).hexdigest()[:10]
    return runs_dir() / f"{config.adapter_name}-{key}"


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("trainer", "hai_tools", "transformers.trainer"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    return handler


def _prepare_run_dir(
    config: TrainConfig, run_dir: Path, fingerprint: dict[str, str], main_process: bool = True
) -> str | None:
    """Return the checkpoint to resume from (with --resume), after checking it belongs to this run. Only the
    main process clears or writes the run folder; the others (distributed training) only read it, after it."""
    state_path = run_dir / "run.json"
    # A checkpoint is complete once its trainer_state.json exists (the trainer writes it last); a run
    # killed while saving leaves an incomplete one, which resume skips.
    checkpoints = sorted(
        (p for p in (run_dir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").exists()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if config.resume:
        if not checkpoints or not state_path.exists():
            raise ConfigError(f"--resume: no checkpoint of a run for {config.output_dir} in {run_dir}")
        previous = json.loads(state_path.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise ConfigError(
                f"--resume: the checkpointed run differs in {', '.join(changed)}; rerun without --resume"
            )
        log.info("resuming from %s", checkpoints[-1].name)
        return str(checkpoints[-1])
    if not main_process:
        return None
    if run_dir.exists():
        if checkpoints:
            log.warning(
                "discarding %d checkpoint(s) of an earlier run (pass --resume to continue it)",
                len(checkpoints),
            )
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_path, json.dumps(fingerprint, indent=2, sort_keys=True))
    return None


def _sft_split(data: Any, limit: int | None, name: str) -> Any:
    missing = [c for c in SFT_COLUMNS if c not in data.column_names]
    if missing:
        raise DatasetError(f"split '{name}' lacks SFT column(s) {missing} (prompt/completion records)")
    data = data.select_columns(list(SFT_COLUMNS))
    return data.select(range(min(limit, len(data)))) if limit else data


def _load_tokenizer(base: BaseModelRef) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if not tokenizer.chat_template:
        if "<start_of_turn>" not in tokenizer.get_vocab():
            raise ConfigError(f"base model {base.id} has no chat template; add one to its tokenizer")
        tokenizer.chat_template = gemma_chat_template()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(config: TrainConfig, base: BaseModelRef) -> Any:
    """A fresh model for training; QLoRA's 4-bit layers take bitsandbytes' portable path on every CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    # SDPA, transformers' default: eager attention materialises every attention matrix (slower on CPU; Gemma 3
    # has no attention soft-capping that would need eager)
    kwargs: dict[str, Any] = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if config.method == "qlora":
        from trainer.quantization import load_4bit

        return load_4bit(AutoModelForCausalLM, base.path, image_text=False, **kwargs)
    return AutoModelForCausalLM.from_pretrained(base.path, **kwargs)


def _output_delta(model: Any, tokenizer: Any, prompt: list[dict[str, str]]) -> float:
    """Max |logit| difference the adapter makes on one prompt: > 0 means the adapter changes the output."""
    import torch

    ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in ids.items()}
    model.eval()
    with torch.no_grad():
        tuned = model(**inputs).logits.float()
        with model.disable_adapter():
            base = model(**inputs).logits.float()
    return float((tuned - base).abs().max())


def train(config: TrainConfig, store: ArtifactStore | None = None) -> Path:
    """Train an adapter as `config` says and return its artifact folder."""
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from trainer.completion_loss import completion_loss_trainer

    config = config.effective()
    if config.dp:
        from trainer.dp import check_dp_config

        check_dp_config(config)
    if config.modality == "image_text":
        if config.dp:
            raise ConfigError("--dp is not supported for image_text training yet")
        from trainer.radiology import train_image_text

        return train_image_text(config, store or open_registry())
    findings = lint_for_vllm(config)
    for finding in findings:
        log.warning("vLLM lint [%s] %s", finding.severity, finding.message)
    if not servable_unmerged(findings):
        log.warning("this adapter must be merged (python -m export merge) before vLLM can serve it")
    if "mlflow" in config.report_to:
        from trainer.tracking import configure_mlflow

        configure_mlflow(config.adapter_name)

    store = store or open_registry()
    record, splits = load_registered(store, config.dataset)
    if "train" not in splits:
        raise DatasetError(f"{record.ref} has no 'train' split (has: {', '.join(splits)})")
    base = resolve_base_model(config.base_model_id)
    check_architecture(Path(base.path))
    patients = None
    if config.dp:
        from trainer.dp import training_patients

        patients = training_patients(config, splits["train"], record.patient_id_column)

    from accelerate import PartialState

    # one process, or one of `accelerate launch`'s (DDP, FSDP, DeepSpeed); without GPUs, DDP over gloo on CPU
    state = PartialState(cpu=not _has_cuda())
    main_process = state.is_main_process
    run_dir = run_dir_for(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(
        run_dir / ("train.log" if main_process else f"train.rank{state.process_index}.log")
    )
    try:
        fingerprint = {
            "config": config.fingerprint(),
            "dataset": record.content_hash,
            "base_model": base.identity,
        }
        if config.dp and state.num_processes > 1:
            raise ConfigError(
                "--dp trains in one process (Opacus' accountant): run it without accelerate launch"
            )
        with state.main_process_first():  # the main process prepares the run folder; the others then read it
            resume_from = _prepare_run_dir(config, run_dir, fingerprint, main_process)
        if state.num_processes > 1:
            log.info(
                "process %d of %d (%s)", state.process_index + 1, state.num_processes, state.distributed_type
            )
        log.info("run %s: %s on %s, dataset %s", run_dir.name, config.method, base.id, record.ref)

        train_data = _sft_split(splits["train"], config.max_train_samples, "train")
        eval_name = "validation" if "validation" in splits else None
        eval_data = _sft_split(splits[eval_name], config.max_eval_samples, eval_name) if eval_name else None
        if config.dp:
            from trainer.dp import resolve_delta

            resolve_delta(config, len(train_data))

        set_seed(config.seed, deterministic=True)
        tokenizer = _load_tokenizer(base)
        model = _load_model(config, base)

        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            modules_to_save=config.modules_to_save or None,
            use_dora=config.use_dora,
        )
        metrics: dict[str, Any]
        if config.dp:
            from peft import get_peft_model

            from trainer.dp import train_dp

            started = time.monotonic()
            tuned, metrics = train_dp(
                config, get_peft_model(model, peft_config), tokenizer, train_data, eval_data, patients
            )
            train_seconds = time.monotonic() - started
        else:
            # always passed, under transformers 5's name: TRL's SFTConfig turns checkpointing on by default, which
            # recomputed every forward pass in backward although the config said off (bench/train_overhead.py)
            optional: dict[str, Any] = {"activation_checkpointing": config.gradient_checkpointing}
            args = SFTConfig(
                output_dir=str(run_dir / "checkpoints"),
                num_train_epochs=config.num_train_epochs,
                max_steps=config.max_steps,
                per_device_train_batch_size=config.per_device_train_batch_size,
                per_device_eval_batch_size=config.per_device_eval_batch_size,
                gradient_accumulation_steps=config.gradient_accumulation_steps,
                learning_rate=config.learning_rate,
                lr_scheduler_type=config.lr_scheduler_type,
                warmup_steps=config.warmup_steps,
                weight_decay=config.weight_decay,
                max_length=config.max_length,
                completion_only_loss=True,
                train_sampling_strategy="group_by_length" if config.group_by_length else "random",
                eval_strategy="steps" if eval_data is not None else "no",
                eval_steps=config.eval_steps,
                save_strategy="steps",
                save_steps=config.save_steps,
                save_total_limit=config.save_total_limit,
                logging_steps=config.logging_steps,
                report_to=[r for r in config.report_to if r != "none"] or "none",
                seed=config.seed,
                data_seed=config.seed,
                full_determinism=True,
                dataloader_num_workers=0,
                bf16=False,
                fp16=False,
                use_cpu=not _has_cuda(),
                dataset_num_proc=None,
                **optional,
            )

            class _LogToFile(TrainerCallback):
                def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                    log.info(
                        "step %d: %s", state.global_step, json.dumps(kwargs.get("logs") or {}, default=str)
                    )

            started = time.monotonic()
            trainer = completion_loss_trainer(SFTTrainer)(
                model=model,
                args=args,
                train_dataset=train_data,
                eval_dataset=eval_data,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[_LogToFile()],
            )
            result = trainer.train(resume_from_checkpoint=resume_from)
            train_seconds = time.monotonic() - started

            metrics = {
                "train_loss": float(result.training_loss),
                "global_step": int(result.global_step),
            }
            if eval_data is not None:
                metrics["eval_loss"] = _final_eval_loss(trainer)
            tuned = trainer.model
        privacy = metrics.pop("differential_privacy", None)
        sample_prompt = (eval_data or train_data)[0]["prompt"]
        metrics["adapter_output_delta_max_abs"] = _output_delta(tuned, tokenizer, sample_prompt)
        log.info("metrics: %s", json.dumps(metrics))

        output_dir = Path(config.output_dir)
        if not main_process:  # the main process alone writes the adapter, its manifest and card
            state.wait_for_everyone()
            return output_dir.resolve()
        distributed = {
            "processes": state.num_processes,
            "type": str(state.distributed_type),
            "global_batch": config.per_device_train_batch_size
            * config.gradient_accumulation_steps
            * state.num_processes,
        }
        with atomic_folder(output_dir) as tmp:
            tuned.save_pretrained(tmp)
            _portable_adapter_config(tmp, base)
            tokenizer.save_pretrained(tmp)
            (tmp / "README.md").write_text(
                render_adapter_card(config, base, record, metrics, findings, privacy)
            )
            write_manifest(
                tmp,
                _adapter_manifest(
                    config,
                    base,
                    record,
                    metrics,
                    findings,
                    train_seconds,
                    resume_from,
                    run_dir,
                    privacy,
                    distributed,
                ),
            )
        manifest_path = output_dir / "manifest.json"
        _register_adapter(store, config, manifest_path)
        log.info("adapter written to %s", output_dir.resolve())
        if "mlflow" in config.report_to:
            from trainer.tracking import log_adapter

            log_adapter(manifest_path)
        state.wait_for_everyone()
        return output_dir.resolve()
    finally:
        for name in ("trainer", "hai_tools", "transformers.trainer"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _final_eval_loss(trainer: Any) -> float:
    """The eval loss at the last step: reuse the evaluation the trainer ran there, else run one."""
    final = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == final:
            return float(entry["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _portable_adapter_config(folder: Path, base: BaseModelRef) -> None:
    """Record the base model's id, not this machine's cache path, and sort set-valued fields, so the
    adapter's bytes are portable and reproducible."""
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base.id
    for key in ("target_modules", "modules_to_save"):
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key])  # peft stores a set: order would vary with PYTHONHASHSEED
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _adapter_manifest(
    config: TrainConfig,
    base: BaseModelRef,
    record: DatasetRecord,
    metrics: dict[str, Any],
    findings: list[LintFinding],
    train_seconds: float,
    resume_from: str | None,
    run_dir: Path,
    privacy: dict[str, Any] | None = None,
    distributed: dict[str, Any] | None = None,
) -> Manifest:
    return Manifest(
        kind="adapter",
        name=config.adapter_name,
        inputs=[
            ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash),
            base.as_input(),
        ],
        config=config.model_dump(),
        code_version=code_version(),
        library_versions=library_versions(LIBRARIES),
        seeds={"seed": config.seed, "data_seed": config.seed},
        metrics=metrics,
        timings={"train_seconds": round(train_seconds, 3)},
        extra={
            "method": config.method,
            "base_model": base.model_dump(),
            "dataset_files": [f.model_dump() for f in record.files],
            "vllm_lint": [f.model_dump() for f in findings],
            "vllm_servable_unmerged": servable_unmerged(findings),
            "resumed_from": Path(resume_from).name if resume_from else None,
            "run_dir": str(run_dir),
            "clinician_review_required": True,
            "differential_privacy": privacy,
            "distributed": distributed,
        },
    )


def _register_adapter(store: ArtifactStore, config: TrainConfig, manifest_path: Path) -> None:
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    version = manifest.content_hash.removeprefix("sha256:")[:12]
    if store.get("adapter", config.adapter_name, version) is None:
        store.put(
            "adapter",
            config.adapter_name,
            version,
            json.dumps(
                {
                    "path": str(manifest_path.parent),
                    "content_hash": manifest.content_hash,
                    "inputs": [i.model_dump() for i in manifest.inputs],
                }
            ),
        )
