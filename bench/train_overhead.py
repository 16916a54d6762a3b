"""`python -m trainer` against the bare loop a user would otherwise write: peft + torch, the same base model,
LoRA config, examples (the first steps x batch records of the split, the same chat-template tokens with
completion-only labels), batch size, steps, learning rate and optimiser (AdamW without weight decay, gradients
clipped at norm 1.0, as the trainer runs). Each side runs in its own process
(model load and the trainer's end-of-training evaluation excluded from the loop time, included in the wall
time); repeats interleaved; min/median/max;
`ratio=` bare loop time / trainer loop time (> 1: the trainer is faster). Minimum 0.95x, goal 1.3x.

The trainer runs with its speed choices (the LM head only at labelled positions, the fused AdamW: both exact,
tested against TRL's loss and gradients). A third side, `grouped`, adds `--group_by_length` (batches of similar
length: less padding, but it changes which records share a batch), to show what that costs. The quality check:
each side's adapter is scored by one function (mean completion-token loss of the first `--eval_records`
validation records, outside the timed loop), each repeat with its own seed on every side, and each gap of
medians (`eval_loss_gap=`) is judged against the seed-to-seed spread: within noise when it is no larger than the
wider side's range and the two sides' seeds overlap (every seed of one side above every seed of the other is
called a systematic gap, not noise).

Measured (16 steps x 4, seeds 42-44, 2026-12-02): trainer 0.882 (0.830-0.907), bare loop 0.888 (0.869-0.896):
within noise; length-grouped 0.909 (0.908-0.933), and 0.936-1.039 with its batches in shuffled order: above
every ungrouped seed, so `--group_by_length` is off in the trainer side, the demo and by default.

    .venv/bin/python bench/train_overhead.py [--steps 8] [--batch 4] [--repeats 2]
    .venv/bin/python bench/train_overhead.py --base_model_id DIR --dataset REF --steps 2 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def eval_loss(model: object, tokenizer: object, args: argparse.Namespace) -> float:
    """Mean completion-token loss on the first `--eval_records` validation records, one at a time (no padding):
    the same function scores both sides."""
    import torch

    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_registered
    from trainer.dp import _tokenize

    _, splits = load_registered(open_registry(), args.dataset)
    validation = splits["validation"]
    rows = _tokenize(
        validation.select(range(min(args.eval_records, len(validation)))), tokenizer, args.max_length
    )
    total = count = 0.0
    model.eval()  # type: ignore[attr-defined]
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()  # type: ignore[operator]
            target = torch.tensor(labels[1:])
            total += float(
                torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
            )
            count += int((target != -100).sum())
    return total / count


def evaluate(args: argparse.Namespace) -> None:
    """The trainer side's adapter, loaded on its base, scored by `eval_loss`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hai_tools.models import resolve_base_model
    from trainer.train import _load_tokenizer

    base = resolve_base_model(args.base_model_id)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, args.evaluate)
    print(json.dumps({"eval_loss": eval_loss(model, _load_tokenizer(base), args)}))


def bare(args: argparse.Namespace) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hai_tools.models import resolve_base_model
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_registered
    from trainer.dp import _tensors, _tokenize
    from trainer.train import _load_tokenizer

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    base = resolve_base_model(args.base_model_id)
    tokenizer = _load_tokenizer(base)
    _, splits = load_registered(open_registry(), args.dataset)
    records = splits["train"].select(range(args.steps * args.batch))
    rows = _tokenize(records, tokenizer, args.max_length)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )  # fmt: skip
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # the trainer's recipe (transformers' defaults it keeps): no weight decay, gradients clipped at norm 1.0
    optimiser = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.0)
    loop = time.perf_counter()
    for step in range(args.steps):
        ids, mask, labels = _tensors(
            rows[step * args.batch : (step + 1) * args.batch], tokenizer.pad_token_id
        )[:]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        optimiser.zero_grad()
    end = time.perf_counter()
    figures = {"loop_s": end - loop, "wall_s": end - started, "loss": float(loss)}
    print(json.dumps({**figures, "eval_loss": eval_loss(model, tokenizer, args)}))


def _child(extra: list[str], env: dict[str, str], what: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], *extra], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{what} failed: {done.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def trainer(
    args: argparse.Namespace, home: Path, env: dict[str, str], seed: int, grouped: bool = False
) -> dict[str, float]:
    out = home / "adapter"
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "trainer",
        "--base_model_id",
        args.base_model_id,
        "--dataset",
        args.dataset,
    ]
    command += ["--adapter_name", "bench", "--output_dir", str(out), "--method", "lora", "--lora_r", "8"]
    command += ["--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch)]
    command += ["--learning_rate", str(args.learning_rate), "--max_length", str(args.max_length)]
    command += ["--max_train_samples", str(args.steps * args.batch), "--lr_scheduler_type", "constant"]
    command += ["--seed", str(seed), "--lora_dropout", "0.05"] + (["--group_by_length"] if grouped else [])
    command += [
        "--warmup_steps",
        "0",
        "--eval_steps",
        "100000",
        "--save_steps",
        "100000",
        "--logging_steps",
        "1",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"python -m trainer failed: {done.stderr.strip().splitlines()[-1:]}")
    wall = time.perf_counter() - started
    log = next(home.rglob("train.log"))
    logged = [json.loads(line[line.index("{") :]) for line in log.read_text().splitlines() if ": {" in line]
    runtime = [entry["train_runtime"] for entry in logged if "train_runtime" in entry][-1]
    evaluating = sum(entry.get("eval_runtime", 0.0) for entry in logged)  # the end-of-training evaluation
    scored = _child(["--evaluate", str(out)], env, "evaluating the trainer's adapter")
    return {"loop_s": float(runtime) - evaluating, "wall_s": wall, "eval_loss": scored["eval_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_model_id", default="embedded:gemma-3-270m")
    parser.add_argument("--dataset", default="demo-screening@2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=192)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval_records", type=int, default=32, help="validation records scored on each side")
    parser.add_argument("--seed", type=int, default=42, help="first repeat's seed (repeat k: seed + k)")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(args)
        return
    if args.evaluate:
        evaluate(args)
        return
    from hai_tools.settings import models_dir, registry_url

    times: dict[str, list[dict[str, float]]] = {"trainer": [], "grouped": [], "bare": []}
    shared = {"HAI_MODELS": str(models_dir()), "HAI_REGISTRY": registry_url()}  # the dataset's registry
    for repeat in range(args.repeats):
        seed = args.seed + repeat  # both sides of a repeat share its seed; repeats differ (the noise)
        for side in times:  # interleaved, each in a fresh home: no resume, no shared runs
            with tempfile.TemporaryDirectory() as scratch:
                env = {**os.environ, **shared, "HAI_HOME": scratch, "HF_HUB_OFFLINE": "1", "USE_TF": "0"}
                times[side].append(
                    _child(["--bare", "--seed", str(seed)], env, "bare loop")
                    if side == "bare"
                    else trainer(args, Path(scratch), env, seed, grouped=side == "grouped")
                )
    print(f"{args.steps} steps x batch {args.batch}, max_length {args.max_length}, {args.base_model_id}; "
          f"{os.cpu_count()} CPUs; {args.repeats} interleaved repeats")  # fmt: skip
    print(f"{'side':<10} {'loop min/median/max s':>26} {'wall median s':>14}")
    for side, runs in times.items():
        loops = [r["loop_s"] for r in runs]
        print(f"{side:<10} {min(loops):>8.2f} {statistics.median(loops):>8.2f} {max(loops):>8.2f} "
              f"{statistics.median([r['wall_s'] for r in runs]):>14.2f}")  # fmt: skip
    ratio = statistics.median([r["loop_s"] for r in times["bare"]]) / statistics.median(
        [r["loop_s"] for r in times["trainer"]]
    )
    print(f"ratio={ratio:.2f} (bare loop time / trainer loop time; minimum 0.95, goal 1.3)")
    grouped = statistics.median([r["loop_s"] for r in times["bare"]]) / statistics.median(
        [r["loop_s"] for r in times["grouped"]]
    )
    print(f"  with --group_by_length: bare / grouped trainer {grouped:.2f}")
    losses = {side: [r["eval_loss"] for r in runs] for side, runs in times.items()}
    for side, values in losses.items():
        print(f"eval_loss {side:<8} median {statistics.median(values):.4f} (seeds: "
              + ", ".join(f"{v:.4f}" for v in values) + ")")  # fmt: skip
    for side, other in (("trainer", "bare"), ("grouped", "trainer")):
        print(f"eval_loss_gap={loss_gap(losses[side], losses[other])} ({side} - {other})")


def loss_gap(ours: list[float], theirs: list[float]) -> str:
    """The gap of medians and its verdict: within noise when no larger than the wider seed range and the two
    sides' seeds overlap; a gap where every seed of one side lies above every seed of the other is systematic."""
    gap = statistics.median(ours) - statistics.median(theirs)
    spread = max(max(ours) - min(ours), max(theirs) - min(theirs))
    apart = min(ours) > max(theirs) or max(ours) < min(theirs)
    verdict = (
        "systematic, every seed apart" if apart else "within noise" if abs(gap) <= spread else "OUTSIDE noise"
    )
    return f"{gap:+.4f} (seed spread {spread:.4f}: {verdict})"


if __name__ == "__main__":
    main()
