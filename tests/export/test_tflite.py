"""TFLite edge builds: converted in the separate converter environment, run here in the LiteRT interpreter,
kept only when parity with PyTorch holds (needs `.venv-tflite`, which `make test` installs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.__main__ import main
from hai_tools.litert import TFLiteModel, embed_tflite
from hai_tools.manifest import verify_artifact


def test_minilm_tflite_fp32_exact_and_int8_small(minilm_tflite: Path) -> None:
    out = minilm_tflite
    manifest = verify_artifact(out, kind="tflite_embedder")
    variants = manifest.metrics["variants"]
    assert variants["fp32"]["min_cosine"] >= 0.9999
    assert variants["int8"]["min_cosine"] >= 0.99
    assert variants["int8"]["size_ratio_to_fp32"] <= 0.30
    from transformers import AutoTokenizer

    vectors = embed_tflite(
        TFLiteModel(out / "int8.tflite"), AutoTokenizer.from_pretrained(out), ["fever", "rash"]
    )
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


def test_tiny_causal_lm_tflite_greedy_decode_matches_pytorch(tiny_lm_tflite: Path, merged_tiny: Path) -> None:
    """Prompts longer than the prefill signature (16) exercise prefill + decode-step filling of the cache."""
    out = tiny_lm_tflite
    manifest = verify_artifact(out, kind="tflite_causal_lm")
    fp32 = manifest.metrics["variants"]["fp32"]
    assert fp32["greedy_exact"] == 1.0 and fp32["top1_agreement"] == 1.0
    assert manifest.input("merged_model").uri == str(merged_tiny)
    from transformers import AutoTokenizer

    from export.parity import PARITY_PROMPTS
    from hai_tools.litert import LiteRTCausalLM

    assert manifest.config["prefill_len"] == 16 and LiteRTCausalLM(out / "fp32.tflite").prefill_len == 16
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert max(len(tokenizer(p)["input_ids"]) for p in PARITY_PROMPTS) > 16  # prefill + decode steps ran


def test_missing_converter_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HAI_TFLITE_PYTHON", str(tmp_path / "nope" / "python"))
    assert (
        main(["tflite", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(tmp_path / "o")]) == 2
    )
    assert "make tflite-env" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_interrupted_conversion_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The converter process is killed (SIGKILL) mid-run: one-line error, no output folder."""
    killed = tmp_path / "python"
    killed.write_text("#!/bin/sh\nkill -9 $$\n")
    killed.chmod(0o755)
    monkeypatch.setenv("HAI_TFLITE_PYTHON", str(killed))
    assert (
        main(["tflite", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(tmp_path / "o")]) == 2
    )
    assert "the converter was killed (signal 9)" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["python"]
