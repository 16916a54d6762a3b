"""`python -m export`: turn a trained adapter into what serves it.

python -m export merge out/adapters/screening-lora --output_dir out/merged/screening-lora
python -m export vllm-recipe out/merged/screening-lora --output_dir out/serving/screening-lora
python -m export verify out/merged/screening-lora
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hai_tools.cli import run_cli


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated token lengths, e.g. 16,32,64,128"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    merge = sub.add_parser("merge", help="merge an adapter into its base model (parity-checked)")
    merge.add_argument("adapter", type=Path)
    merge.add_argument("--output_dir", type=Path, required=True)
    merge.add_argument("--base_model_id", help="default: the base recorded in the adapter's manifest")
    merge.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |logit diff| allowed (default 1e-4)"
    )
    merge.add_argument(
        "--parity_dtype",
        choices=["float64", "float32"],
        default="float64",
        help="precision of the parity forward passes (float32 for models too large for float64)",
    )
    merge.add_argument(
        "--merge_tolerance",
        type=float,
        help="max |logit diff| of the merge itself, before its weights are rounded to float32 for storage "
        "(default 1e-5 with float64 parity, --tolerance with float32)",
    )
    recipe = sub.add_parser("vllm-recipe", help="write the vllm serve command, config and readiness contract")
    recipe.add_argument("merged", type=Path, nargs="?", help="merged model folder")
    recipe.add_argument(
        "--adapter", type=Path, action="append", help="serve adapters unmerged instead (repeatable)"
    )
    recipe.add_argument("--output_dir", type=Path, required=True)
    recipe.add_argument("--release_id", help="served model name (default: <name>-<hash12>)")
    recipe.add_argument("--dtype", default="bfloat16")
    recipe.add_argument("--max_model_len", type=int)
    recipe.add_argument("--port", type=int, default=8000)
    onnx = sub.add_parser("onnx", help="ONNX export with onnxruntime parity (embedder or causal LM)")
    which = onnx.add_mutually_exclusive_group(required=True)
    which.add_argument("--embedder", help="embedded:all-minilm-l6-v2 or a sentence-embedding HF folder")
    which.add_argument("--causal_lm", help="a merged model folder, HF folder or embedded:gemma-3-270m")
    onnx.add_argument("--output_dir", type=Path, required=True)
    onnx.add_argument(
        "--tolerance", type=float, help="max abs difference (default 1e-4 embedder, 1e-3 logits)"
    )
    tfl = sub.add_parser(
        "tflite", help="TFLite fp32 + int8 edge builds (converter venv), kept only if parity holds"
    )
    which = tfl.add_mutually_exclusive_group(required=True)
    which.add_argument("--embedder", help="embedded:all-minilm-l6-v2 or a sentence-embedding HF folder")
    which.add_argument(
        "--causal_lm", help="a merged or distilled model folder (small: the on-device reasoner)"
    )
    tfl.add_argument("--output_dir", type=Path, required=True)
    tfl.add_argument(
        "--seq_len",
        type=int,
        default=128,
        help="embedder: token window (128 on every backend); causal LM: KV cache length",
    )
    tfl.add_argument(
        "--prefill_len", type=int, help="causal LM: prefill signature length (default: seq_len / 2)"
    )
    tfl.add_argument(
        "--buckets",
        type=_int_list,
        help="embedder: token lengths, one signature each over one set of weights; a text runs in the smallest "
        "that holds it (default 16,32,64,128; the largest is the window)",
    )
    tfl.add_argument("--decode_steps", type=int, default=32, help="greedy steps compared against PyTorch")
    tfl.add_argument("--no_int8", action="store_true", help="skip the int8 variant")
    tfl.add_argument(
        "--int8_recipe",
        choices=["dynamic", "weight_only"],
        default="dynamic",
        help="int8 weights with int8 activations (dynamic, fastest) or float32 compute (weight_only, closest)",
    )
    agree = tfl.add_argument_group(
        "causal LM: agreement with the served model (each variant below a floor is not written; none left: refused)"
    )
    agree.add_argument("--dataset", help="registered dataset whose eval split the reasoner is measured on")
    agree.add_argument(
        "--teacher",
        help="the served model it stands in for (default: itself if merged, or a student's teacher)",
    )
    agree.add_argument("--agreement_split", default="test")
    agree.add_argument(
        "--agreement_limit", type=int, default=100, help="cases measured (first N of the split)"
    )
    agree.add_argument("--agreement_steps", type=int, default=32, help="teacher's greedy tokens per case")
    agree.add_argument(
        "--min_label_agreement", type=float, default=0.9, help="same screening label as the teacher"
    )
    agree.add_argument(
        "--min_token_agreement", type=float, default=0.8, help="top-1 tokens along the teacher's answer"
    )
    agree.add_argument(
        "--max_size_ratio", type=float, default=0.30, help="file bytes / the teacher's weight bytes"
    )
    dist = sub.add_parser(
        "distill", help="distil a merged teacher into a small Gemma-3 student (TRL GKD, off-policy)"
    )
    dist.add_argument("teacher", type=Path, help="merged model folder")
    dist.add_argument("--output_dir", type=Path, required=True)
    dist.add_argument("--dataset", default="demo-screening@2")
    dist.add_argument("--kl", choices=["forward", "reverse"], default="forward")
    dist.add_argument("--max_steps", type=int, default=20)
    dist.add_argument("--learning_rate", type=float, default=1e-3)
    dist.add_argument("--per_device_train_batch_size", type=int, default=4)
    dist.add_argument("--max_length", type=int, default=192)
    dist.add_argument("--hidden_size", type=int, default=128)
    dist.add_argument("--num_hidden_layers", type=int, default=2)
    dist.add_argument(
        "--min_kl_reduction",
        type=float,
        default=0.05,
        help="refuse a student whose held-out KL to the teacher fell by less than this share of its initial KL",
    )
    dist.add_argument("--seed", type=int, default=42)
    verify = sub.add_parser("verify", help="recheck every hash in an artifact's manifest chain")
    verify.add_argument("path", type=Path)
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "merge":
        from export.merge import merge_adapter

        out = merge_adapter(
            args.adapter,
            args.output_dir,
            args.base_model_id,
            args.tolerance,
            args.parity_dtype,
            args.merge_tolerance,
        )
        print(f"merged model: {out}")
    elif args.action == "vllm-recipe":
        from export.vllm_recipe import write_vllm_recipe
        from hai_tools.errors import ConfigError

        if (args.merged is None) == (not args.adapter):
            raise ConfigError("give a merged model folder or --adapter folders, not both or neither")
        out = write_vllm_recipe(
            args.merged,
            args.output_dir,
            args.release_id,
            args.adapter,
            args.dtype,
            args.max_model_len,
            args.port,
        )
        print(f"vLLM recipe: {out / 'vllm_serve.sh'}")
    elif args.action == "onnx":
        from export.onnx_export import export_onnx

        kind = "embedder" if args.embedder else "causal_lm"
        out = export_onnx(args.embedder or args.causal_lm, args.output_dir, kind, args.tolerance)
        print(f"onnx {kind}: {out / 'model.onnx'}")
    elif args.action == "tflite":
        from export.edge_agreement import AgreementFloors
        from export.tflite import TeacherCheck, export_tflite

        kind = "embedder" if args.embedder else "causal_lm"
        check = None
        if kind == "causal_lm" and args.dataset:
            check = TeacherCheck(
                dataset=args.dataset,
                teacher=args.teacher,
                split=args.agreement_split,
                limit=args.agreement_limit,
                steps=args.agreement_steps,
                floors=AgreementFloors(
                    args.min_label_agreement, args.min_token_agreement, args.max_size_ratio
                ),
            )
        out = export_tflite(
            args.embedder or args.causal_lm,
            args.output_dir,
            kind,
            args.seq_len,
            args.decode_steps,
            not args.no_int8,
            args.prefill_len,
            check,
            args.int8_recipe,
            args.buckets,
        )
        print(f"tflite {kind}: {out}")
    elif args.action == "distill":
        from pydantic import ValidationError

        from export.distill import DistillConfig, StudentConfig, distill
        from hai_tools.config_file import first_error
        from hai_tools.errors import ConfigError

        try:
            student = StudentConfig(hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers)
            config = DistillConfig(
                dataset=args.dataset,
                kl=args.kl,
                max_steps=args.max_steps,
                learning_rate=args.learning_rate,
                per_device_train_batch_size=args.per_device_train_batch_size,
                max_length=args.max_length,
                min_kl_reduction=args.min_kl_reduction,
                seed=args.seed,
                student=student,
            )
        except ValidationError as exc:
            raise ConfigError(f"distill option {first_error(exc)}") from None
        out = distill(args.teacher, args.output_dir, config)
        print(f"student: {out}")
    else:
        from hai_tools.chain import verify_chain

        for link in verify_chain(args.path):
            print(f"ok {'  ' * link.depth}{link.kind} {link.name} {link.hash[:19]} ({link.where})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
