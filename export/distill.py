"""Knowledge distillation from a merged teacher into a small Gemma-3 student (the on-device reasoner), with
TRL's GKD trainer run off-policy (lmbda=0): forward KL (beta=0) or reverse KL (beta=1) on teacher logits over
the completion tokens of a registered dataset. Then `export tflite --causal_lm` on the student.

The divergence the run minimises is measured on held-out prompts before and after training (teacher-forced on the
teacher's greedy continuations); a run that leaves the student no closer to its teacher (by `min_kl_reduction`)
is refused and writes nothing.

    python -m export distill out/merged/screening-lora --output_dir out/students/screening --max_steps 20
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hai_tools.errors import HaiError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    library_versions,
    verify_artifact,
    write_manifest,
)
from hai_tools.registry import open_registry
from hai_tools.registry.datasets import load_registered
from hai_tools.settings import runs_dir

log = logging.getLogger("export")
LIBRARIES = ("torch", "transformers", "trl", "datasets", "hai-tools")


class StudentNotCloser(HaiError):
    """Distillation left the student no closer to its teacher on the held-out prompts than its initialisation."""


class StudentConfig(BaseModel):
    """A small Gemma-3 text model sharing the teacher's tokenizer and vocabulary."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(512, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(2, ge=1)
    num_key_value_heads: int = Field(1, ge=1)
    head_dim: int = Field(64, ge=8)


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = "demo-screening@2"
    kl: Literal["forward", "reverse"] = "forward"
    temperature: float = Field(1.0, gt=0)
    max_steps: int = Field(20, ge=1)
    per_device_train_batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_length: int = Field(192, ge=16)
    max_train_samples: int | None = Field(None, ge=1)
    eval_prompts: int = Field(8, ge=1)
    eval_new_tokens: int = Field(16, ge=1)
    min_kl_reduction: float = Field(0.05, ge=0, lt=1)
    seed: int = 42
    student: StudentConfig = Field(default_factory=StudentConfig)


def _messages(split: Any, limit: int | None) -> Any:
    data = split.map(
        lambda row: {"messages": list(row["prompt"]) + list(row["completion"])},
        remove_columns=split.column_names,
    )
    return data.select(range(min(limit, len(data)))) if limit else data


def _student(teacher: Any, config: StudentConfig, seed: int) -> Any:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    text = teacher.config.get_text_config()
    torch.manual_seed(seed)
    student_config = Gemma3TextConfig(
        vocab_size=text.vocab_size,
        max_position_embeddings=min(int(text.max_position_embeddings), 8192),
        sliding_window=min(int(getattr(text, "sliding_window", 512) or 512), 512),
        layer_types=["full_attention"] * config.num_hidden_layers,
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        **config.model_dump(),
    )
    return Gemma3ForCausalLM(student_config)


def teacher_tokenizer(teacher_dir: Path) -> Any:
    """The teacher's tokenizer, padding with end-of-sequence where it has no pad token (as student and teacher
    generate with it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def held_out_prompts(splits: Any, n: int) -> list[Any]:
    """The prompts agreement is measured on: the first n of the test split, else validation, else train."""
    held_out = splits.get("test") or splits.get("validation") or splits["train"]
    return [held_out[i]["prompt"] for i in range(min(n, len(held_out)))]


def teacher_targets(
    teacher: Any, tokenizer: Any, prompts: list[Any], new_tokens: int
) -> list[tuple[Any, int]]:
    """Each held-out prompt followed by the teacher's greedy continuation, and where the continuation starts."""
    import torch

    targets = []
    for prompt in prompts:
        batch = tokenizer.apply_chat_template(
            list(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            ids = teacher.generate(
                **batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        targets.append((ids, batch["input_ids"].shape[1]))
    return targets


def agreement(
    targets: list[tuple[Any, int]], student: Any, tokenizer: Any, new_tokens: int
) -> dict[str, float]:
    """The student's greedy continuations against the teacher's in `targets` (see `teacher_targets`)."""
    import torch

    same_tokens = total = same_first_line = 0
    for ids, start in targets:
        prompt = ids[:, :start]
        with torch.no_grad():
            mine = student.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )[0, start:].tolist()
        outs = [ids[0, start:].tolist(), mine]
        n = min(len(outs[0]), len(outs[1]))
        same_tokens += sum(int(a == b) for a, b in zip(outs[0][:n], outs[1][:n], strict=True))
        total += max(len(outs[0]), 1)
        lines = [tokenizer.decode(o, skip_special_tokens=True).strip().split("\n")[0] for o in outs]
        same_first_line += int(lines[0] == lines[1])
    return {
        "greedy_token_agreement": same_tokens / max(total, 1),
        "first_line_agreement": same_first_line / len(targets),
        "heldout_prompts": len(targets),
    }


def heldout_kl(teacher: Any, student: Any, targets: list[tuple[Any, int]], kl: str) -> float:
    """Mean per-token divergence of the student from the teacher over the teacher's continuations (temperature 1):
    KL(teacher || student) for forward distillation, KL(student || teacher) for reverse, the one the run minimises."""
    import torch

    total, positions = 0.0, 0
    for ids, start in targets:
        with torch.no_grad():
            t, s = (
                torch.log_softmax(m(input_ids=ids).logits[0, start - 1 : -1].double(), dim=-1)
                for m in (teacher, student)
            )
        p, q = (t, s) if kl == "forward" else (s, t)
        total += float((p.exp() * (p - q)).sum())
        positions += p.shape[0]
    return total / max(positions, 1)


def distill(teacher_dir: Path, output_dir: Path, config: DistillConfig) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, set_seed
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    teacher_manifest = verify_artifact(Path(teacher_dir))
    record, splits = load_registered(open_registry(), config.dataset)
    set_seed(config.seed, deterministic=True)
    tokenizer = teacher_tokenizer(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(
        teacher_dir, dtype=torch.float32, attn_implementation="eager"
    )
    student = _student(teacher, config.student, config.seed)
    prompts = held_out_prompts(splits, config.eval_prompts)
    targets = teacher_targets(teacher.eval(), tokenizer, prompts, config.eval_new_tokens)
    kl_at_init = heldout_kl(teacher, student.eval(), targets, config.kl)
    run_dir = runs_dir() / f"distill-{Path(output_dir).name}"
    args = GKDConfig(
        output_dir=str(run_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        max_length=config.max_length,
        lmbda=0.0,
        beta=0.0 if config.kl == "forward" else 1.0,
        temperature=config.temperature,
        seq_kd=False,
        save_strategy="no",
        logging_steps=max(1, config.max_steps // 5),
        report_to="none",
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
    )
    started = time.monotonic()
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=_messages(splits["train"], config.max_train_samples),
        processing_class=tokenizer,
    )
    result = trainer.train()
    seconds = time.monotonic() - started
    trained: Any = trainer.model
    student = trained.eval()
    kl_trained = heldout_kl(teacher, student, targets, config.kl)
    if not kl_trained <= (1 - config.min_kl_reduction) * kl_at_init:
        lower = 1 - kl_trained / kl_at_init if kl_at_init > 0 else 0.0
        raise StudentNotCloser(
            f"distillation left the student no closer to its teacher: held-out {config.kl} KL {kl_at_init:.4g} at "
            f"initialisation, {kl_trained:.4g} after {config.max_steps} steps ({lower:.1%} lower, floor "
            f"{config.min_kl_reduction * 100:g}%); nothing written"
        )
    metrics: dict[str, Any] = {
        "distill_loss": float(result.training_loss),
        "heldout_kl_at_init": kl_at_init,
        "heldout_kl": kl_trained,
        **agreement(targets, student, tokenizer, config.eval_new_tokens),
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
    }
    log.info("distillation: %s", json.dumps(metrics))
    with atomic_folder(Path(output_dir)) as tmp:
        trained.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            Manifest(
                kind="distilled_model",
                name=Path(output_dir).name,
                inputs=[
                    ArtifactInput(
                        kind=teacher_manifest.kind,
                        name=teacher_manifest.name,
                        hash=teacher_manifest.content_hash,
                        uri=str(Path(teacher_dir).resolve()),
                    ),
                    ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash),
                ],
                config={**config.model_dump(), "trainer": "trl.experimental.gkd.GKDTrainer", "lmbda": 0.0},
                code_version=code_version(),
                library_versions=library_versions(LIBRARIES),
                seeds={"seed": config.seed},
                metrics=metrics,
                timings={"distill_seconds": round(seconds, 1)},
                extra={"clinician_review_required": True},
            ),
        )
    return Path(output_dir).resolve()
