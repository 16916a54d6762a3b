"""ONNX exports run in onnxruntime with dynamic batch and sequence, matching PyTorch; a parity miss writes
nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.__main__ import main
from hai_tools.manifest import verify_artifact


def _pytorch_logits(model_dir: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from export.onnx_export import CausalLMLogits

    module = CausalLMLogits.build(model_dir)
    with torch.no_grad():
        return module(**{k: torch.from_numpy(v) for k, v in batch.items()}).float().numpy()


def _parity_batch(folder: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    from export.parity import PARITY_PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    batch = tokenizer(list(PARITY_PROMPTS[:2]), padding=True, return_tensors="np")
    return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def test_causal_lm_onnx_matches_pytorch_on_other_batch_sizes(merged_tiny: Path, tmp_path: Path) -> None:
    """The parity figures recorded are recomputed here from the stored model.onnx against the merged model in
    PyTorch on the export's parity batch (padded positions excluded)."""
    out = tmp_path / "lm"
    assert main(["onnx", "--causal_lm", str(merged_tiny), "--output_dir", str(out)]) == 0
    manifest = verify_artifact(out, kind="onnx_causal_lm")
    batch = _parity_batch(out)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, batch)[0]
    reference = _pytorch_logits(merged_tiny, batch)
    mask = batch["attention_mask"].astype(bool)
    assert manifest.metrics["parity_max_abs_diff"] == pytest.approx(
        float(np.abs(got - reference)[mask].max()), rel=1e-3, abs=1e-9
    )
    assert manifest.metrics["parity_batch"] == 2 and 0 < mask.sum() < mask.size  # padding was in the batch
    agreement = float((got.argmax(-1) == reference.argmax(-1))[mask].mean())
    assert manifest.metrics["parity_top1_agreement"] == agreement == 1.0
    assert manifest.input("merged_model").uri == str(merged_tiny)
    session = ort.InferenceSession(str(out / "model.onnx"))
    for batch, seq in ((1, 5), (3, 17)):
        ids = np.random.default_rng(0).integers(4, 300, size=(batch, seq), dtype=np.int64)
        logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert logits.shape[:2] == (batch, seq)


def test_minilm_embedder_onnx_is_normalised_and_exact(tmp_path: Path) -> None:
    """The recorded figures recomputed from the stored model.onnx; the saved tokenizer truncates at the window
    every backend uses, so a text longer than it embeds as the local backend (the serving path) embeds it, and
    the parity texts include one such text (embedded whole, it would be another vector)."""
    import asyncio

    import torch

    from export.onnx_export import MeanPooledEmbedder, embed_parity_texts
    from hai_tools.models import EMBED_MAX_TOKENS, embedder_path
    from skills.backends.local import LocalBackend

    out = tmp_path / "minilm"
    assert main(["onnx", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(out)]) == 0
    manifest = verify_artifact(out, kind="onnx_embedder")
    assert manifest.config["max_tokens"] == EMBED_MAX_TOKENS
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = list(embed_parity_texts())
    whole = tokenizer(texts[-1])["input_ids"]
    assert len(whole) > EMBED_MAX_TOKENS  # the long text is longer than the window
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    assert feeds["input_ids"].shape[1] == EMBED_MAX_TOKENS  # the saved tokenizer truncates there
    session = ort.InferenceSession(str(out / "model.onnx"))
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        reference = MeanPooledEmbedder.build(embedder_path())(
            *(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
        ).numpy()
    cosine = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    assert manifest.metrics["parity_max_abs_diff"] == pytest.approx(
        float(np.abs(got - reference).max()), rel=1e-3, abs=1e-9
    )
    assert manifest.metrics["parity_min_cosine"] == pytest.approx(float(cosine.min()), abs=1e-9)
    served = np.asarray(
        asyncio.run(LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2").embed(texts))
    )
    assert float(got[-1] @ served[-1]) == pytest.approx(1.0, abs=1e-5)
    full = session.run(
        None, {"input_ids": np.array([whole]), "attention_mask": np.ones((1, len(whole)), np.int64)}
    )
    assert float(full[0][0] @ served[-1]) < 0.999, "embedded whole, the long text would be another vector"

    tokenizer = AutoTokenizer.from_pretrained(out)
    feeds = dict(
        tokenizer(["a", "a much longer sentence about a toddler"], padding=True, return_tensors="np")
    )
    feeds = {k: v.astype(np.int64) for k, v in feeds.items() if k in ("input_ids", "attention_mask")}
    vectors = ort.InferenceSession(str(out / "model.onnx")).run(None, feeds)[0]
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_an_export_that_misses_its_parity_tolerance_writes_nothing(
    merged_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate itself: the same export held to a tolerance below its float32 difference is refused; a negative
    tolerance is refused before anything is exported."""
    out = tmp_path / "lm"
    assert main(["onnx", "--causal_lm", str(merged_tiny), "--output_dir", str(out), "--tolerance", "0"]) == 2
    err = capsys.readouterr().err
    assert "ONNX causal_lm differs from PyTorch by " in err and "> 0; nothing written" in err
    assert not out.exists()
    assert main(["onnx", "--causal_lm", str(merged_tiny), "--output_dir", str(out), "--tolerance", "-1"]) == 2
    assert "--tolerance -1: give a max abs difference >= 0" in capsys.readouterr().err
    assert not out.exists()


def test_unsupported_architecture_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "not-a-model"}')
    assert main(["onnx", "--causal_lm", str(folder), "--output_dir", str(tmp_path / "o")]) == 2
    assert "unsupported" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
