"""`export distill` on the tiny merged teacher, then the student's TFLite build (greedy decode parity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export.__main__ import main
from export.distill import (
    DistillConfig,
    StudentConfig,
    _student,
    agreement,
    held_out_prompts,
    heldout_kl,
    teacher_targets,
    teacher_tokenizer,
)
from hai_tools.manifest import verify_artifact
from hai_tools.registry import open_registry
from hai_tools.registry.datasets import load_registered
from tests.conftest import measured_only


@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_student_distilled_with_provenance_and_agreement(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, kl: str
) -> None:
    out = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                str(merged_tiny),
                "--output_dir",
                str(out),
                "--kl",
                kl,
                "--max_steps",
                "3",
                "--hidden_size",
                "32",
                "--num_hidden_layers",
                "1",
                "--max_length",
                "128",
            ]
        )
        == 0
    )
    manifest = verify_artifact(out, kind="distilled_model")
    assert manifest.config["kl"] == kl
    assert [i.kind for i in manifest.inputs] == ["merged_model", "dataset"]
    assert manifest.metrics["student_parameters"] < manifest.metrics["teacher_parameters"]
    # the agreement recorded is the saved student's with its teacher, on the held-out prompts
    teacher, student, tokenizer, prompts = _held_out(merged_tiny, out)
    targets = teacher_targets(teacher, tokenizer, prompts, DistillConfig().eval_new_tokens)
    again = agreement(targets, student, tokenizer, DistillConfig().eval_new_tokens)
    assert manifest.metrics["greedy_token_agreement"] == pytest.approx(again["greedy_token_agreement"])
    assert manifest.metrics["first_line_agreement"] == pytest.approx(again["first_line_agreement"])
    assert manifest.metrics["heldout_prompts"] == again["heldout_prompts"] == DistillConfig().eval_prompts
    # and so is the divergence the run minimised, of the saved student and of its initialisation (same seed)
    init = _student(teacher, StudentConfig(hidden_size=32, num_hidden_layers=1), DistillConfig().seed).eval()
    assert manifest.metrics["heldout_kl"] == pytest.approx(
        heldout_kl(teacher, student, targets, kl), rel=1e-5
    )
    assert manifest.metrics["heldout_kl_at_init"] == pytest.approx(
        heldout_kl(teacher, init, targets, kl), rel=1e-5
    )


def test_a_student_distillation_did_not_move_is_refused_and_nothing_is_written(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A learning rate too small to move the student: its held-out KL to the teacher stays where initialisation
    left it, and the run is refused rather than written as a student of that teacher."""
    out = tmp_path / "student"
    args = ["distill", str(merged_tiny), "--output_dir", str(out), "--max_steps", "2", "--hidden_size", "32"]
    args += ["--num_hidden_layers", "1", "--max_length", "128", "--learning_rate", "1e-9"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "distillation left the student no closer to its teacher: held-out forward KL " in err
    assert "(0.0% lower, floor 5%); nothing written" in err
    assert not out.exists()
    assert main([*args[:-2], "--min_kl_reduction", "1.5"]) == 2
    assert "distill option min_kl_reduction: Input should be less than 1" in capsys.readouterr().err


def _held_out(teacher_dir: Path, student_dir: Path) -> tuple[Any, Any, Any, list[Any]]:
    """Teacher and student loaded as distillation loads them, with its tokenizer and held-out prompts."""
    import torch
    from transformers import AutoModelForCausalLM

    _, splits = load_registered(open_registry(), DistillConfig().dataset)
    models = [
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        for folder in (teacher_dir, student_dir)
    ]
    prompts = held_out_prompts(splits, DistillConfig().eval_prompts)
    return models[0], models[1], teacher_tokenizer(teacher_dir), prompts


def test_agreement_is_whole_for_the_teacher_itself_and_counts_each_matching_token(
    merged_tiny: Path, demo_dataset: str
) -> None:
    """The agreement measure on its own: the teacher against itself agrees on every token and first line; against
    a copy whose (tied) embedding is nudged, it is the share of positions where the two greedy continuations hold
    the same token, recounted here from each model's own `generate`, so a prompt that differs in one token of
    eight costs one eighth of that prompt, not all of it."""
    import torch

    teacher, student, tokenizer, prompts = _held_out(merged_tiny, merged_tiny)
    same = agreement(teacher_targets(teacher, tokenizer, prompts, 8), student, tokenizer, 8)
    assert same == {
        "greedy_token_agreement": 1.0,
        "first_line_agreement": 1.0,
        "heldout_prompts": len(prompts),
    }
    with torch.no_grad():
        head = student.get_output_embeddings().weight
        noise = torch.randn(head.shape, generator=torch.Generator().manual_seed(0))
        head.add_(0.3 * head.std() * noise)
    matches, total = [], 0
    for prompt in prompts:
        batch = tokenizer.apply_chat_template(
            list(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        start = batch["input_ids"].shape[1]
        with torch.no_grad():
            a, b = (
                m.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)[
                    0, start:
                ].tolist()
                for m in (teacher, student)
            )
        matches.append(sum(x == y for x, y in zip(a, b, strict=False)))
        total += len(a)
    assert any(0 < m < 8 for m in matches), matches  # the nudge changes some tokens of a prompt, not all
    other = agreement(teacher_targets(teacher, tokenizer, prompts, 8), student, tokenizer, 8)
    assert other["greedy_token_agreement"] == pytest.approx(sum(matches) / total)
    assert other["greedy_token_agreement"] < 1.0


def test_distilled_student_tflite_decodes_like_pytorch(
    merged_tiny: Path, demo_dataset: str, tmp_path: Path
) -> None:
    student = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                str(merged_tiny),
                "--output_dir",
                str(student),
                "--max_steps",
                "2",
                "--hidden_size",
                "32",
                "--num_hidden_layers",
                "1",
                "--max_length",
                "128",
            ]
        )
        == 0
    )
    edge = tmp_path / "edge"
    assert (
        main(
            [
                "tflite",
                "--causal_lm",
                str(student),
                "--output_dir",
                str(edge),
                "--seq_len",
                "128",
                "--prefill_len",
                "32",
                *measured_only(demo_dataset),
            ]
        )
        == 0
    )
    fp32 = verify_artifact(edge).metrics["variants"]["fp32"]
    assert fp32["greedy_exact"] == 1.0
    assert main(["verify", str(edge)]) == 0
