"""The on-device fallback: the MCP server with only the tflite backend, on export's LiteRT models (the MiniLM
embedder and a causal LM with prefill/decode signatures), answering through the SDK client over stdio."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import write_server_config

ROOT = Path(__file__).resolve().parents[2]


def test_tflite_backend_embeds_and_reasons(
    minilm_tflite: Path, tiny_lm_tflite: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    config = write_server_config(
        tmp_path / "server.yaml",
        backends=["tflite"],
        reasoner=None,
        embedder=None,
        tflite={"embedder_dir": str(minilm_tflite), "reasoner_dir": str(tiny_lm_tflite)},
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "mcp_server.py"), "--config", str(config)],
        env=server_env,
        cwd=str(ROOT),
    )

    async def body() -> dict[str, Any]:
        async with Client(params, read_timeout_seconds=300) as client:
            return {
                "embed": await client.call_tool("embed", {"texts": ["fever and rash", "fever with a rash"]}),
                "reason": await client.call_tool(
                    "reason",
                    {
                        "question": "A 9-month-old does not sit without support. Is this a red flag?",
                        "max_new_tokens": 8,
                    },
                ),
                "screen": await client.call_tool(
                    "screen",
                    {"case_id": "t1", "age_months": 9, "observations": "Does not sit without support."},
                ),
            }

    out = asyncio.run(body())
    embed = out["embed"].structured_content
    assert not out["embed"].is_error and embed["backend"] == "tflite" and embed["dimension"] == 384
    a, b = (np.asarray(v) for v in embed["vectors"])
    assert float(a @ b) > 0.8  # near-paraphrases stay close on the int8 edge model
    reason = out["reason"].structured_content
    assert not out["reason"].is_error and reason["backend"] == "tflite"
    assert reason["requires_clinician_review"] is True and reason["model"]["release"].startswith("tflite-")
    screen = out["screen"].structured_content  # the on-device decision: likelihood scoring on LiteRT
    assert screen["backend"] == "tflite" and screen["label"] in ("refer", "monitor", "on-track")
    assert abs(sum(screen["probabilities"].values()) - 1) < 1e-4


def test_every_backend_embeds_a_long_text_from_the_same_window(minilm_tflite: Path) -> None:
    """A text longer than the embedder's window gives the same vector on the local and the edge backend (fp32):
    both keep its first EMBED_MAX_TOKENS tokens. The local model's own limit (256) kept more, so a failover
    changed what a long note's vector meant (cosine 0.953 on this text before the window was shared)."""
    from export.onnx_export import EMBED_LONG
    from skills.backends.local import LocalBackend
    from skills.backends.tflite import TFLiteBackend

    async def both() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        local = LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2")
        edge = TFLiteBackend(embedder_dir=str(minilm_tflite), variant="fp32")
        short = "Fever for three days with a new rash."
        (long_local, short_local), (long_edge, short_edge) = (
            await local.embed([EMBED_LONG, short]),
            await edge.embed([EMBED_LONG, short]),
        )
        return tuple(np.asarray(v) for v in (long_local, long_edge, short_local, short_edge))  # type: ignore[return-value]

    long_local, long_edge, short_local, short_edge = asyncio.run(both())
    assert float(long_local @ long_edge) > 0.999, float(long_local @ long_edge)
    assert float(short_local @ short_edge) > 0.999


def test_an_edge_embedder_with_another_window_is_refused(tmp_path: Path) -> None:
    from export.tflite import ConversionError, export_tflite

    with pytest.raises(ConversionError, match="the embedder's window is 128 tokens on every backend"):
        export_tflite("embedded:all-minilm-l6-v2", tmp_path / "edge", "embedder", seq_len=256)
    assert not (tmp_path / "edge").exists()


def test_a_prompt_the_on_device_cache_cannot_hold_is_refused_typed(tiny_lm_tflite: Path) -> None:
    """The edge reasoner's KV cache bounds prompt + answer. A prompt one token short of the cache is answered with
    one generated token, but refused for the screening choice, which must fit the longest label after it; a longer
    prompt is refused for both. Each refusal is a typed RequestRejected naming both sizes (the failover hands it
    to the caller and never counts it against the backend), and the backend keeps answering."""
    from transformers import AutoTokenizer

    from hai_tools.demo_data import LABEL_CHOICES
    from hai_tools.likelihood import candidate_ids
    from skills.backends.base import RequestRejected
    from skills.backends.tflite import TFLiteBackend

    edge = TFLiteBackend(reasoner_dir=str(tiny_lm_tflite))
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_tflite)
    cache = 128  # the fixture's --seq_len

    def messages(words: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": " ".join(["fever"] * words)}]

    def length(words: int) -> int:
        return len(
            tokenizer.apply_chat_template(
                messages(words), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )

    words = next(n for n in range(1, cache) if length(n) == cache - 1)
    labels = list(LABEL_CHOICES)
    assert max(map(len, candidate_ids(tokenizer, labels))) > 1  # the choice needs more room than one token

    async def calls() -> tuple[str, dict[str, float]]:
        answer = await edge.generate(messages(words), max_new_tokens=8)  # room for one token
        with pytest.raises(
            RequestRejected, match=rf"^prompt of {cache - 1} tokens exceeds the on-device cache \({cache}\)$"
        ):
            await edge.choose(messages(words), labels)
        longer = next(n for n in range(words, 2 * cache) if length(n) > cache)
        refused = rf"^prompt of {length(longer)} tokens exceeds the on-device cache \({cache}\)$"
        with pytest.raises(RequestRejected, match=refused):
            await edge.generate(messages(longer), max_new_tokens=8)
        with pytest.raises(RequestRejected, match=refused):
            await edge.choose(messages(longer), labels)
        return answer, await edge.choose(messages(3), labels)

    answer, probabilities = asyncio.run(calls())
    assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) <= 1
    assert set(probabilities) == set(labels) and abs(sum(probabilities.values()) - 1) < 1e-4
