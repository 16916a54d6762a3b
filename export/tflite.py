"""TFLite/LiteRT edge builds for the on-device fallback. The converter (litert-torch, ai-edge-quantizer) lives in
its own environment and runs as a subprocess (`export/tflite_worker.py`); this side, in the main environment,
runs each variant in the LiteRT interpreter against PyTorch and writes only the variants that pass parity.

    make tflite-env   # once: the converter environment (.venv-tflite)
    python -m export tflite --embedder embedded:all-minilm-l6-v2 --output_dir out/edge/minilm
    python -m export tflite --causal_lm out/merged/screening-lora --output_dir out/edge/reasoner \
        --int8_recipe weight_only --dataset demo-screening@2   # measured against the served model, floors applied
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.edge_agreement import AgreementFloors, TeacherCases, edge_agreement, refusals, teacher_cases
from export.merge import ParityError
from export.onnx_export import EMBED_LONG, EMBED_SENTENCES, MeanPooledEmbedder
from export.parity import PARITY_PROMPTS, greedy_decode_torch
from hai_tools.errors import ConfigError, HaiError
from hai_tools.litert import LiteRTCausalLM, TFLiteModel, _pad, embed_tflite, smallest_bucket
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    library_versions,
    load_manifest,
    write_manifest,
)
from hai_tools.models import EMBED_MAX_TOKENS, check_architecture, resolve_base_model

log = logging.getLogger("export")

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "tflite_worker.py"
LIBRARIES = ("torch", "transformers", "ai-edge-litert", "hai-tools")
# Gates per variant: (metric, minimum). int8 must also be at most 30% of the fp32 file.
EMBEDDER_GATES = {"fp32": 0.9999, "int8": 0.99}
INT8_MAX_SIZE_RATIO = 0.30
# ai-edge-quantizer recipes for the int8 variant: dynamic quantises activations too (fastest on CPU); weight_only
# stores int8 weights and computes in float32 (the same size, closer to the float model, as fast as fp32).
INT8_RECIPES = {"dynamic": "dynamic_wi8_afp32", "weight_only": "weight_only_wi8_afp32"}
# The edge embedder's length buckets: one signature each over one set of weights; a text runs in the smallest
# that holds it (padding a short text to the whole window made it pay for 128 tokens). The largest is the window.
EMBED_BUCKETS = (16, 32, 64, EMBED_MAX_TOKENS)


class ConversionError(HaiError):
    """The converter subprocess failed or its environment is missing; nothing was written."""


def converter_python() -> Path:
    """The converter environment's interpreter: `$HAI_TFLITE_PYTHON`, else `.venv-tflite` of this checkout."""
    path = Path(os.environ.get("HAI_TFLITE_PYTHON") or ROOT / ".venv-tflite" / "bin" / "python")
    if not path.exists():
        raise ConversionError(f"TFLite converter environment not found at {path}: run `make tflite-env`")
    return path


def run_converter(job: dict[str, Any], timeout: int = 3600) -> None:
    job_file = Path(job["output_dir"]) / "job.json"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [str(converter_python()), str(WORKER), str(job_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=job["output_dir"],
    )
    if proc.returncode < 0:
        raise ConversionError(
            f"TFLite conversion of {job['kind']} failed: the converter was killed (signal {-proc.returncode}); "
            "nothing written"
        )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ConversionError(
            f"TFLite conversion of {job['kind']} failed: {lines[-1] if lines else proc.returncode}"
        )


def _latency_ms(fn: Any, repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def parity_texts(tokenizer: Any, buckets: tuple[int, ...]) -> list[str]:
    """The embedder's parity texts: the fixed sentences, one longer than the window (truncation compared too),
    and for each bucket the longest opening of that long text that fits it, so every signature is checked.
    Refuses buckets no text lands in (before anything is converted)."""
    words = EMBED_LONG.split()
    openings = [" ".join(words[:n]) for n in range(1, len(words))]
    sizes = [len(tokenizer(text)["input_ids"]) for text in openings]  # once: every bucket picks from them
    texts = [*EMBED_SENTENCES, EMBED_LONG]
    for bucket in buckets[:-1]:
        fits = [text for text, size in zip(openings, sizes, strict=True) if size <= bucket]
        if fits:
            texts.append(fits[-1])
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    used = {smallest_bucket(buckets, n) for n in lengths}
    empty = [b for b in buckets if b not in used]
    if empty:
        raise ConfigError(
            f"--buckets {','.join(map(str, buckets))}: no parity text lands in bucket(s) "
            f"{', '.join(map(str, empty))} (the shortest has {min(lengths)} tokens), so their signatures could not "
            "be checked; choose buckets that texts fill"
        )
    return texts


def check_buckets(buckets: tuple[int, ...], seq_len: int) -> tuple[int, ...]:
    if list(buckets) != sorted(set(buckets)) or not buckets or buckets[0] < 1:
        raise ConfigError(f"--buckets {','.join(map(str, buckets))}: give increasing positive token lengths")
    if buckets[-1] != seq_len:
        raise ConfigError(
            f"--buckets {','.join(map(str, buckets))}: the largest bucket is the window, {seq_len} tokens"
        )
    return tuple(buckets)


def _evaluate_embedder(
    folder: Path, module: Any, tokenizer: Any, seq_len: int, texts: list[str]
) -> dict[str, dict[str, float]]:
    import torch

    with torch.no_grad():
        reference = np.stack(
            [
                module(
                    *(
                        torch.from_numpy(a)
                        for a in _pad(
                            tokenizer(t, truncation=True, max_length=seq_len)["input_ids"],
                            seq_len,
                            tokenizer.pad_token_id or 0,
                        )
                    )
                )[0].numpy()
                for t in texts
            ]
        )
    first = tokenizer(texts[0])["input_ids"]
    row, mask = _pad(first, len(first), tokenizer.pad_token_id or 0)  # PyTorch runs the text unpadded
    torch_ms = _latency_ms(lambda: module(torch.from_numpy(row), torch.from_numpy(mask)))
    results: dict[str, dict[str, float]] = {}
    for variant in ("fp32", "int8"):
        path = folder / f"{variant}.tflite"
        if not path.exists():
            continue
        model = TFLiteModel(path)
        got = embed_tflite(model, tokenizer, texts)
        cosine = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        results[variant] = {
            "min_cosine": float(cosine.min()),
            "size_bytes": path.stat().st_size,
            "latency_ms_batch1": _latency_ms(lambda m=model: embed_tflite(m, tokenizer, texts[:1])),
            "torch_latency_ms_batch1": torch_ms,
            "buckets": float(len(model.buckets)),
        }
    return results


def _evaluate_causal_lm(
    folder: Path, model_dir: Path, tokenizer: Any, steps: int
) -> dict[str, dict[str, float]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for p in PARITY_PROMPTS[:2]
    ]
    expected = [greedy_decode_torch(model, p, steps) for p in prompts]
    torch_ms = _latency_ms(lambda: greedy_decode_torch(model, prompts[0], 8), repeats=3) / 8
    results: dict[str, dict[str, float]] = {}
    for variant in ("fp32", "int8"):
        path = folder / f"{variant}.tflite"
        if not path.exists():
            continue
        lm = LiteRTCausalLM(path)
        got = [lm.greedy(p, steps) for p in prompts]
        forced = [lm.forced_top1(p, e) for p, e in zip(prompts, expected, strict=True)]
        agree = sum(
            int(a == b) for f, e in zip(forced, expected, strict=True) for a, b in zip(f, e, strict=True)
        )
        results[variant] = {
            "greedy_exact": float(got == expected),
            "top1_agreement": agree / max(sum(len(e) for e in expected), 1),
            "decode_steps": float(steps),
            "size_bytes": path.stat().st_size,
            "latency_ms_per_token": _latency_ms(lambda m=lm: m.greedy(prompts[0], 8), repeats=3) / 8,
            "torch_latency_ms_per_token": torch_ms,
        }
    return results


@dataclass(frozen=True)
class TeacherCheck:
    """What an on-device reasoner is measured against (`export/edge_agreement.py`): the served model it stands in
    for (default: the merged model itself, or a distilled student's teacher from its manifest), on `split` of a
    registered dataset (`limit` cases, `steps` greedy tokens each), and the floors a variant must clear."""

    dataset: str
    teacher: str | None = None
    split: str = "test"
    limit: int | None = 100
    steps: int = 32
    floors: AgreementFloors = field(default_factory=AgreementFloors)


def _teacher_dir(model_dir: Path, teacher: str | None) -> Path:
    if teacher:
        folder = Path(resolve_base_model(teacher).path)
        check_architecture(folder, "causal_lm")
        return folder
    kind = load_manifest(model_dir).kind if (model_dir / "manifest.json").exists() else None
    if kind == "merged_model":
        return model_dir
    if kind == "distilled_model":
        source = next(
            (i for i in load_manifest(model_dir).inputs if i.kind == "merged_model" and i.uri), None
        )
        if source is not None:
            return Path(str(source.uri))
    raise ConfigError(
        f"{model_dir} is not a merged or distilled model: name the served model it stands in for with --teacher"
    )


def _teacher_setup(model_dir: Path, tokenizer: Any, check: TeacherCheck) -> tuple[Path, Any, list[Any]]:
    """Everything the agreement needs, checked before anything is converted: the teacher, its tokenizer (the
    same vocabulary, or token agreement means nothing) and the eval cases."""
    from transformers import AutoTokenizer

    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_split

    if check.limit is not None and check.limit < 1:
        raise ConfigError(f"--agreement_limit {check.limit} must be at least 1")
    if check.steps < 1:
        raise ConfigError(f"--agreement_steps {check.steps} must be at least 1")
    teacher = _teacher_dir(model_dir, check.teacher)
    if not teacher.exists():
        raise ConfigError(f"the teacher {teacher} does not exist")
    if AutoTokenizer.from_pretrained(teacher).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"{model_dir} and its teacher {teacher} tokenise differently: token agreement would compare unrelated ids"
        )
    record, records = load_split(open_registry(), check.dataset, check.split, check.limit)
    return teacher, record, records


def export_tflite(
    model_id: str,
    output_dir: Path,
    kind: str,
    seq_len: int = 128,
    decode_steps: int = 32,
    int8: bool = True,
    prefill_len: int | None = None,
    check: TeacherCheck | None = None,
    int8_recipe: str = "dynamic",
    buckets: tuple[int, ...] | None = None,
) -> Path:
    """Convert, then keep each variant that passes its gate; fail (write nothing) if fp32 fails. A causal LM
    gets a `prefill_<prefill_len>` signature (default seq_len / 2); longer prompts fill the rest of the cache
    by decode steps. A causal LM is also measured against its teacher on an eval set (`check`, required): only
    variants that clear the agreement floors are written, and with none it refuses."""
    from transformers import AutoTokenizer

    base = resolve_base_model(model_id)
    model_dir = Path(base.path)
    check_architecture(model_dir, "causal_lm" if kind == "causal_lm" else "encoder")
    if int8_recipe not in INT8_RECIPES:
        raise ConfigError(f"--int8_recipe {int8_recipe}: choose one of {', '.join(INT8_RECIPES)}")
    if kind == "causal_lm" and check is None:
        raise ConfigError(
            "an on-device reasoner is measured against the model it stands in for: give --dataset (the eval set, "
            "e.g. demo-screening@2)"
        )
    if kind == "embedder" and seq_len != EMBED_MAX_TOKENS:
        raise ConversionError(
            f"--seq_len {seq_len}: the embedder's window is {EMBED_MAX_TOKENS} tokens on every backend "
            "(hai_tools.models.EMBED_MAX_TOKENS); an edge model with another would embed long texts differently"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts: list[str] = []
    if kind == "embedder":
        buckets = check_buckets(tuple(buckets or EMBED_BUCKETS), seq_len)
        texts = parity_texts(tokenizer, buckets)
    elif buckets:
        raise ConfigError("--buckets is for an embedder; a causal LM has its prefill length (--prefill_len)")
    prefill_len = prefill_len or seq_len // 2
    if not 1 <= prefill_len <= seq_len:
        raise ConversionError(f"--prefill_len {prefill_len} must be between 1 and --seq_len ({seq_len})")
    if kind == "causal_lm" and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher: tuple[Path, Any, list[Any]] | None = None
    if kind == "causal_lm":
        assert check is not None
        teacher = _teacher_setup(model_dir, tokenizer, check)
    started = time.monotonic()
    with atomic_folder(Path(output_dir)) as tmp:
        scratch = tmp / ".convert"
        run_converter(
            {
                "kind": kind,
                "model_dir": str(model_dir),
                "output_dir": str(scratch),
                "seq_len": seq_len,
                "prefill_len": prefill_len,
                "int8": int8,
                "int8_recipe": INT8_RECIPES[int8_recipe],
                "buckets": list(buckets or ()),
            }
        )
        for variant in ("fp32", "int8"):
            if (scratch / f"{variant}.tflite").exists():
                shutil.move(scratch / f"{variant}.tflite", tmp / f"{variant}.tflite")
        shutil.rmtree(scratch)
        convert_seconds = time.monotonic() - started
        if kind == "embedder":
            results = _evaluate_embedder(tmp, MeanPooledEmbedder.build(model_dir), tokenizer, seq_len, texts)
        else:
            results = _evaluate_causal_lm(tmp, model_dir, tokenizer, decode_steps)
        rejected = _apply_gates(tmp, kind, results)
        if "fp32" in rejected:
            raise ParityError(f"TFLite {kind} fp32 fails parity ({rejected['fp32']}); nothing written")
        inputs = [base.as_source_input()]
        agreement_config: dict[str, Any] = {}
        if teacher is not None and check is not None:
            teacher_dir, record, records = teacher
            log.info("measuring each variant against the teacher %s on %d cases", teacher_dir, len(records))
            cases = teacher_cases(teacher_dir, tokenizer, records, check.steps)
            rejected.update(_apply_floors(tmp, results, rejected, cases, tokenizer, check.floors))
            if not [v for v in results if v not in rejected]:
                raise ParityError(
                    "TFLite reasoner: no variant stands in for its teacher ("
                    + "; ".join(f"{v}: {why}" for v, why in rejected.items())
                    + "); nothing written"
                )
            if teacher_dir.resolve() != model_dir.resolve():
                inputs.append(resolve_base_model(str(teacher_dir)).as_source_input())
            inputs.append(ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash))
            agreement_config = {
                "teacher_agreement": {
                    "teacher": str(teacher_dir.resolve()),
                    "dataset": record.ref,
                    "split": check.split,
                    "limit": check.limit,
                    "steps": check.steps,
                    "floors": asdict(check.floors),
                }
            }
        for variant, why in rejected.items():
            log.warning("TFLite %s %s not written: %s", kind, variant, why)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            Manifest(
                kind=f"tflite_{kind}",
                name=base.id,
                inputs=inputs,
                config={
                    "kind": kind,
                    "seq_len": seq_len,
                    **(
                        {"prefill_len": prefill_len}
                        if kind == "causal_lm"
                        else {"buckets": list(buckets or ())}
                    ),
                    "batch": 1,
                    "decode_steps": decode_steps,
                    "route": f"litert-torch (convert / export_hf), ai-edge-quantizer {INT8_RECIPES[int8_recipe]} for int8",
                    "gates": {
                        "embedder_min_cosine": EMBEDDER_GATES,
                        "int8_max_size_ratio": INT8_MAX_SIZE_RATIO,
                        "causal_lm": "fp32 greedy tokens identical; int8 top-1 agreement >= 0.9",
                    },
                    **agreement_config,
                },
                code_version=code_version(),
                library_versions=library_versions(LIBRARIES),
                metrics={
                    "variants": {k: v for k, v in results.items() if k not in rejected},
                    "rejected": rejected,
                },
                timings={
                    "convert_seconds": round(convert_seconds, 1),
                    "total_seconds": round(time.monotonic() - started, 1),
                },
            ),
        )
    return Path(output_dir).resolve()


def _apply_floors(
    folder: Path,
    results: dict[str, dict[str, float]],
    rejected: dict[str, str],
    cases: TeacherCases,
    tokenizer: Any,
    floors: AgreementFloors,
) -> dict[str, str]:
    """Each variant still standing against the teacher: over the size cap it is refused unmeasured, else its
    agreement goes into its figures (`teacher_*`) and any floor it misses refuses it."""
    refused: dict[str, str] = {}
    for variant in [v for v in results if v not in rejected]:
        path = folder / f"{variant}.tflite"
        ratio = path.stat().st_size / cases.weight_bytes
        results[variant]["size_ratio_to_teacher"] = ratio
        if ratio > floors.max_size_ratio:
            refused[variant] = f"size {ratio:.1%} of the teacher's weights > {floors.max_size_ratio:.0%}"
        else:
            figures = edge_agreement(path, tokenizer, cases)
            results[variant].update({f"teacher_{k}": v for k, v in figures.items()})
            why = refusals(figures, floors)
            if why:
                refused[variant] = "; ".join(why)
        if variant in refused:
            path.unlink()
    return refused


def _apply_gates(folder: Path, kind: str, results: dict[str, dict[str, float]]) -> dict[str, str]:
    rejected: dict[str, str] = {}
    for variant, metrics in results.items():
        if kind == "embedder":
            if metrics["min_cosine"] < EMBEDDER_GATES[variant]:
                rejected[variant] = f"min cosine {metrics['min_cosine']:.5f} < {EMBEDDER_GATES[variant]}"
        elif variant == "fp32" and metrics["greedy_exact"] < 1.0:
            rejected[variant] = (
                f"greedy tokens differ from PyTorch (top-1 agreement {metrics['top1_agreement']:.3f})"
            )
        elif variant == "int8" and metrics["top1_agreement"] < 0.9:
            rejected[variant] = f"top-1 agreement {metrics['top1_agreement']:.3f} < 0.9"
    if "int8" in results and "fp32" in results and "int8" not in rejected:
        ratio = results["int8"]["size_bytes"] / results["fp32"]["size_bytes"]
        results["int8"]["size_ratio_to_fp32"] = ratio
        if kind == "embedder" and ratio > INT8_MAX_SIZE_RATIO:
            rejected["int8"] = f"size {ratio:.0%} of fp32 > {INT8_MAX_SIZE_RATIO:.0%}"
    for variant in rejected:
        (folder / f"{variant}.tflite").unlink(missing_ok=True)
    return rejected
