"""TFLite edge builds: converted in the separate converter environment, run here in the LiteRT interpreter,
kept only when parity with PyTorch holds (needs `.venv-tflite`, which `make test` installs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.__main__ import main
from export.tflite import EMBEDDER_GATES
from hai_tools.litert import TFLiteModel, embed_tflite
from hai_tools.manifest import verify_artifact


def test_minilm_tflite_fp32_exact_and_int8_small(minilm_tflite: Path) -> None:
    """The parity figures recorded are recomputed here: each stored variant's vectors, run in LiteRT, against
    the local backend's (the serving PyTorch path) on the export's parity texts."""
    import asyncio

    from transformers import AutoTokenizer

    from export.tflite import parity_texts
    from skills.backends.local import LocalBackend

    out = minilm_tflite
    manifest = verify_artifact(out, kind="tflite_embedder")
    variants = manifest.metrics["variants"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = parity_texts(tokenizer, tuple(manifest.config["buckets"]))
    local = LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2")
    served = np.asarray(asyncio.run(local.embed(texts)))
    for variant in ("fp32", "int8"):
        edge = embed_tflite(TFLiteModel(out / f"{variant}.tflite"), tokenizer, texts)
        cosine = (edge * served).sum(1) / (np.linalg.norm(edge, axis=1) * np.linalg.norm(served, axis=1))
        assert variants[variant]["min_cosine"] == pytest.approx(float(cosine.min()), abs=1e-5), variant
    assert variants["int8"]["size_ratio_to_fp32"] <= 0.30  # the gate
    # the goal (issue 20), from the files themselves: positions looked up, quantization stored once
    assert (out / "int8.tflite").stat().st_size <= 0.26 * (out / "fp32.tflite").stat().st_size
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


def test_the_edge_embedder_runs_each_text_in_the_smallest_bucket_that_holds_it(minilm_tflite: Path) -> None:
    """Length buckets (one signature each, one set of weights): a short text no longer pays for the whole
    window, and the bucket it runs in does not change its vector (the same text padded to the window gives the
    same embedding); the export's parity texts land in every bucket."""
    from transformers import AutoTokenizer

    from export.tflite import EMBED_BUCKETS, parity_texts
    from hai_tools.litert import _pad

    manifest = verify_artifact(minilm_tflite, kind="tflite_embedder")
    assert manifest.config["buckets"] == [16, 32, 64, 128] == list(EMBED_BUCKETS)
    model, tokenizer = (
        TFLiteModel(minilm_tflite / "fp32.tflite"),
        AutoTokenizer.from_pretrained(minilm_tflite),
    )
    assert model.buckets == [16, 32, 64, 128] and model.seq_len == 128
    assert [model.bucket(n) for n in (3, 16, 17, 33, 65, 128, 400)] == [16, 16, 32, 64, 128, 128, 128]
    texts = parity_texts(tokenizer, EMBED_BUCKETS)
    used = {model.bucket(len(tokenizer(t, truncation=True, max_length=128)["input_ids"])) for t in texts}
    assert used == {16, 32, 64, 128}
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=128)["input_ids"]
        window = model.run(*_pad(ids, 128, tokenizer.pad_token_id))[0]
        bucketed = embed_tflite(model, tokenizer, [text])[0]
        assert float(window @ bucketed) > 0.99999, (len(ids), float(window @ bucketed))
    with pytest.raises(
        ValueError, match=r"a row of 20 tokens: this edge embedder takes rows of \[16, 32, 64, 128\]"
    ):
        model.run(*_pad(ids, 20, 0))


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ("2,128", "no parity text lands in bucket(s) 2 (the shortest has 9 tokens)"),
        ("16,64", "the largest bucket is the window, 128 tokens"),
        ("32,16,128", "give increasing positive token lengths"),
        ("16,x", "give comma-separated token lengths"),
    ],
)
def test_buckets_that_cannot_be_checked_or_served_are_refused_before_conversion(
    buckets: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused before the converter runs: with no converter environment at all the refusal is still the bucket's."""
    monkeypatch.setenv("HAI_TFLITE_PYTHON", str(tmp_path / "nope" / "python"))
    args = ["tflite", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(tmp_path / "o")]
    try:
        code = main([*args, "--buckets", buckets])
    except SystemExit as exit:  # argparse refuses a malformed list itself
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "make tflite-env" not in err
    assert not (tmp_path / "o").exists()


LEGACY_EMBEDDER = """
import sys, torch, litert_torch
from transformers import BertConfig, BertModel
bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, attn_implementation="eager")).eval()
class Pooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = bert
    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.mean(1)
sample = (torch.ones((1, 8), dtype=torch.int32), torch.ones((1, 8), dtype=torch.int32))
litert_torch.convert(Pooled().eval(), sample).export(sys.argv[1])
"""


def test_an_edge_embedder_built_before_buckets_loads_as_one_bucket(tmp_path: Path) -> None:
    """Edge embedders built before length buckets hold one unnamed signature at the window's length: they still
    load and run, as one bucket (a tiny BERT converted the old way, in the converter environment)."""
    import os
    import subprocess

    from export.tflite import converter_python
    from hai_tools.litert import _pad

    path = tmp_path / "legacy.tflite"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(converter_python()), "-c", LEGACY_EMBEDDER, str(path)], check=True, env=env, capture_output=True
    )
    model = TFLiteModel(path)
    assert model.buckets == [8] and model.seq_len == 8 and model.bucket(3) == 8
    assert model.run(*_pad([2, 5, 3], 8, 0)).shape == (1, 16)


COMPACTION_CHECK = """
import json, sys, collections, runpy
from pathlib import Path
from ai_edge_litert.tools import flatbuffer_utils
worker = runpy.run_path(sys.argv[1])
path, scratch = Path(sys.argv[2]), Path(sys.argv[3])
model = flatbuffer_utils.read_model(str(path))
users = collections.defaultdict(set)
for index, subgraph in enumerate(model.subgraphs):
    for tensor in subgraph.tensors:
        users[tensor.buffer].add(index)
large = [b for b, buffer in enumerate(model.buffers) if buffer.data is not None and len(buffer.data) > 4096]
quantization = sum(12 * len(t.quantization.scale) for t in model.subgraphs[0].tensors
                   if t.quantization is not None and t.quantization.scale is not None)
flatbuffer_utils.write_model(model, str(scratch / "naive.tflite"))  # the same model, packed without sharing
expected = worker["model_digest"](model)
tensor = next(t for t in model.subgraphs[1].tensors if t.quantization is not None and t.quantization.scale is not None
              and len(t.quantization.scale) > 1)
tensor.quantization.scale[0] *= 2
flatbuffer_utils.write_model(model, str(scratch / "bad.tflite"))
try:
    worker["check_same"](expected, scratch / "bad.tflite", path.name)
    refused = None
except SystemExit as exit:
    refused = str(exit)
print(json.dumps({
    "signatures": len(model.subgraphs), "size": path.stat().st_size,
    "naive": (scratch / "naive.tflite").stat().st_size, "quantization_per_signature": quantization,
    "large_buffers_not_in_every_signature": [b for b in large if len(users[b]) != len(model.subgraphs)],
    "refused": refused,
}))
"""


def test_the_edge_embedder_stores_positions_and_quantization_once_and_a_changed_rewrite_is_refused(
    minilm_tflite: Path, tmp_path: Path
) -> None:
    """The int8 edge embedder as built (in the converter environment): every weight buffer over 4 KB serves all
    four signatures (positions are one looked-up table, not per-signature constants), and its quantization
    parameters are stored once (packed the stock way, one copy per signature, the same model is larger by at
    least three signatures' worth). The compaction's read-back check refuses a rewrite in which one scale
    changed, with its message."""
    import json
    import os
    import subprocess

    from export.tflite import converter_python

    worker = Path(__file__).resolve().parents[2] / "export" / "tflite_worker.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [
            str(converter_python()),
            "-c",
            COMPACTION_CHECK,
            str(worker),
            str(minilm_tflite / "int8.tflite"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["signatures"] == 4 and found["large_buffers_not_in_every_signature"] == []
    assert found["quantization_per_signature"] > 500_000
    assert found["naive"] - found["size"] >= 3 * found["quantization_per_signature"], found
    assert found["refused"] == "int8.tflite: the compacted model reads back different from the converted one"


def test_a_conversion_whose_fp32_variant_fails_parity_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real MiniLM conversion and parity measurement, held to a cosine no float model can reach (the fp32
    gate raised above 1): the conversion fails with one line naming the variant and its figure, and no output
    folder is left. The int8 variant is skipped: the fp32 gate alone decides."""
    monkeypatch.setitem(EMBEDDER_GATES, "fp32", 1.01)
    out = tmp_path / "o"
    assert (
        main(["tflite", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(out), "--no_int8"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "TFLite embedder fp32 fails parity (min cosine " in err and "< 1.01); nothing written" in err
    assert list(tmp_path.iterdir()) == []
