"""The LiteRT runtime: converted models in the LiteRT interpreter. The serving side's TFLite backend runs them
(skills/backends/tflite.py), and export's parity gates run the same code against PyTorch before a variant is
written (export/tflite.py): it lives here, below both, so serving never imports the exporter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def smallest_bucket(buckets: list[int] | tuple[int, ...], length: int) -> int:
    """The smallest of the increasing `buckets` that holds `length` tokens; a longer text is truncated to the
    window (the largest)."""
    return next(b for b in buckets if b >= min(length, buckets[-1]))


class TFLiteModel:
    """A converted embedder in the LiteRT interpreter: `run(input_ids, attention_mask)` on one padded row. Built
    with length buckets (signatures `seq_<N>`, one set of weights), a text runs in the smallest bucket that holds
    it, so a short text does not pay for the whole window; a model of one signature has one bucket. `seq_len`
    is the largest: the window."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        names = [n for n in self.interpreter.get_signature_list() if n.startswith("seq_") and n[4:].isdigit()]
        if names:
            self.runners = {int(n[4:]): self.interpreter.get_signature_runner(n) for n in names}
        else:
            runner = self.interpreter.get_signature_runner()
            self.runners = {int(runner.get_input_details()["args_0"]["shape"][1]): runner}
        self.buckets = sorted(self.runners)
        self.seq_len = self.buckets[-1]

    def bucket(self, length: int) -> int:
        """The smallest bucket that holds `length` tokens (texts are truncated to the window first)."""
        return smallest_bucket(self.buckets, length)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        width = int(input_ids.shape[1])
        if width not in self.runners:
            raise ValueError(f"a row of {width} tokens: this edge embedder takes rows of {self.buckets}")
        out = self.runners[width](args_0=input_ids.astype(np.int32), args_1=attention_mask.astype(np.int32))
        return np.asarray(next(iter(out.values())))


def _pad(ids: list[int], seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = ids[:seq_len]
    row = np.full((1, seq_len), pad_id, dtype=np.int64)
    mask = np.zeros((1, seq_len), dtype=np.int64)
    row[0, : len(ids)] = ids
    mask[0, : len(ids)] = 1
    return row, mask


def embed_tflite(model: TFLiteModel, tokenizer: Any, texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=model.seq_len)["input_ids"]
        rows.append(model.run(*_pad(ids, model.bucket(len(ids)), tokenizer.pad_token_id or 0))[0])
    return np.stack(rows)


class LiteRTCausalLM:
    """A causal LM exported by litert-torch's `export_hf`: `prefill_<N>` and `decode` signatures sharing a KV
    cache, run in the LiteRT interpreter. Masks are additive (0 = attend)."""

    NEG = float(np.finfo(np.float32).min)

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        names = interpreter.get_signature_list()
        prefill = next(name for name in names if name.startswith("prefill_"))
        self.prefill_len = int(prefill.split("_")[1])
        self.prefill = interpreter.get_signature_runner(prefill)
        self.decode = interpreter.get_signature_runner("decode")
        details = self.decode.get_input_details()
        self.cache_len = int(details["mask"]["shape"][-1])
        self.kv_shapes = {k: tuple(v["shape"]) for k, v in details.items() if k.startswith("kv_cache")}
        self.interpreter = interpreter

    def _start(self, prompt: list[int]) -> dict[str, np.ndarray]:
        """Fill the cache with all prompt tokens but the last (prefill in chunks, then decode steps)."""
        kv = {k: np.zeros(shape, np.float32) for k, shape in self.kv_shapes.items()}
        head = prompt[:-1]
        chunk = head[: self.prefill_len]
        if chunk:
            tokens = np.zeros((1, self.prefill_len), np.int32)
            tokens[0, : len(chunk)] = chunk
            mask = np.full((1, 1, self.prefill_len, self.cache_len), self.NEG, np.float32)
            for row in range(self.prefill_len):
                mask[0, 0, row, : row + 1] = 0
            out = self.prefill(
                tokens=tokens, input_pos=np.arange(self.prefill_len, dtype=np.int32), mask=mask, **kv
            )
            kv = {k: v for k, v in out.items() if k.startswith("kv_cache")}
        for pos in range(len(chunk), len(head)):
            _, kv = self.step(head[pos], pos, kv)
        return kv

    def step(
        self, token: int, pos: int, kv: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        mask = np.full((1, 1, 1, self.cache_len), self.NEG, np.float32)
        mask[0, 0, 0, : pos + 1] = 0
        out = self.decode(
            tokens=np.array([[token]], np.int32), input_pos=np.array([pos], np.int32), mask=mask, **kv
        )
        return np.asarray(out["logits"])[0, -1], {k: v for k, v in out.items() if k.startswith("kv_cache")}

    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        kv, token, generated = self._start(prompt), prompt[-1], []
        for pos in range(len(prompt) - 1, min(len(prompt) - 1 + steps, self.cache_len)):
            logits, kv = self.step(token, pos, kv)
            token = int(logits.argmax())
            generated.append(token)
        return generated

    def continuation_logprobs(self, prompt: list[int], candidates: list[list[int]]) -> np.ndarray:
        """Summed log-probability of each candidate's token ids after `prompt` (the prompt's cache is filled
        once and shared by the candidates)."""
        start, scores = self._start(prompt), []
        for ids in candidates:
            kv, total = start, 0.0
            for offset, token in enumerate([prompt[-1], *ids[:-1]]):
                logits, kv = self.step(token, len(prompt) - 1 + offset, kv)
                shifted = logits.astype(np.float64) - logits.max()
                total += float(shifted[ids[offset]] - np.log(np.exp(shifted).sum()))
            scores.append(total)
        return np.asarray(scores)

    def forced_top1(self, prompt: list[int], continuation: list[int]) -> list[int]:
        """Argmax at each position while feeding `continuation` (teacher forcing along a reference path)."""
        kv, predictions = self._start(prompt), []
        for offset, token in enumerate([prompt[-1], *continuation[:-1]]):
            logits, kv = self.step(token, len(prompt) - 1 + offset, kv)
            predictions.append(int(logits.argmax()))
        return predictions
