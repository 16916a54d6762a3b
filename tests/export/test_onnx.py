"""ONNX exports run in onnxruntime with dynamic batch and sequence, matching PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.__main__ import main
from hai_tools.manifest import verify_artifact


def test_causal_lm_onnx_matches_pytorch_on_other_batch_sizes(merged_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "lm"
    assert main(["onnx", "--causal_lm", str(merged_tiny), "--output_dir", str(out)]) == 0
    manifest = verify_artifact(out, kind="onnx_causal_lm")
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-3
    assert manifest.metrics["parity_top1_agreement"] == 1.0
    assert manifest.input("merged_model").uri == str(merged_tiny)
    session = ort.InferenceSession(str(out / "model.onnx"))
    for batch, seq in ((1, 5), (3, 17)):
        ids = np.random.default_rng(0).integers(4, 300, size=(batch, seq), dtype=np.int64)
        logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert logits.shape[:2] == (batch, seq)


def test_minilm_embedder_onnx_is_normalised_and_exact(tmp_path: Path) -> None:
    out = tmp_path / "minilm"
    assert main(["onnx", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(out)]) == 0
    manifest = verify_artifact(out, kind="onnx_embedder")
    assert manifest.metrics["parity_min_cosine"] >= 0.9999
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    feeds = dict(
        tokenizer(["a", "a much longer sentence about a toddler"], padding=True, return_tensors="np")
    )
    feeds = {k: v.astype(np.int64) for k, v in feeds.items() if k in ("input_ids", "attention_mask")}
    vectors = ort.InferenceSession(str(out / "model.onnx")).run(None, feeds)[0]
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_unsupported_architecture_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "not-a-model"}')
    assert main(["onnx", "--causal_lm", str(folder), "--output_dir", str(tmp_path / "o")]) == 2
    assert "unsupported" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
