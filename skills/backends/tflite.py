"""On-device fallback: the LiteRT interpreter on `export tflite` outputs (embedder, and the distilled student
with its prefill/decode KV-cache signatures). Each folder's manifest is verified before it is loaded."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from hai_tools.manifest import verify_artifact
from skills.backends.base import BackendUnavailable, RequestRejected, model_capability
from skills.contracts import Backend as BackendName
from skills.contracts import ModelIdentity


class TFLiteBackend:
    name: BackendName = "tflite"

    def __init__(
        self, embedder_dir: str | None = None, reasoner_dir: str | None = None, variant: str = "int8"
    ) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, ModelIdentity] = {}
        self._dirs: dict[str, Path] = {}
        self._variant = variant
        self._models: dict[str, Any] = {}
        for capability, folder in (("embed", embedder_dir), ("generate", reasoner_dir)):
            if folder:
                manifest = verify_artifact(Path(folder))
                self._dirs[capability] = Path(folder)
                self._ids[capability] = ModelIdentity(
                    base=manifest.name,
                    manifest_hash=manifest.content_hash,
                    release=f"tflite-{self._pick(Path(folder)).stem}",
                )

    def _pick(self, folder: Path) -> Path:
        preferred = folder / f"{self._variant}.tflite"
        return preferred if preferred.exists() else folder / "fp32.tflite"

    def supports(self, capability: str) -> bool:
        return model_capability(capability) in self._ids

    def identity(self, capability: str, adapter: str | None = None) -> ModelIdentity:
        # one model per capability here: a call naming another adapter was refused before it ran
        return self._ids[model_capability(capability)]

    def serves_adapter(self, adapter: str) -> bool:
        return False

    def _model(self, capability: str) -> tuple[Any, Any]:
        with self._lock:
            if capability not in self._models:
                from transformers import AutoTokenizer

                from hai_tools.litert import LiteRTCausalLM, TFLiteModel
                from hai_tools.models import EMBED_MAX_TOKENS

                folder = self._dirs[capability]
                runner: Any
                if capability == "embed":
                    runner = TFLiteModel(self._pick(folder))
                    if runner.seq_len != EMBED_MAX_TOKENS:
                        raise BackendUnavailable(
                            f"edge embedder {folder.name} has a {runner.seq_len}-token window, not the "
                            f"{EMBED_MAX_TOKENS} of every other backend: re-export it (python -m export tflite)"
                        )
                else:
                    runner = LiteRTCausalLM(self._pick(folder))
                self._models[capability] = (runner, AutoTokenizer.from_pretrained(folder))
            return self._models[capability]  # type: ignore[no-any-return]

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        from hai_tools.litert import embed_tflite

        model, tokenizer = self._model("embed")
        with self._lock:
            return [list(map(float, v)) for v in embed_tflite(model, tokenizer, texts)]

    def _prompt(self, messages: list[dict[str, str]], reserve: int) -> tuple[Any, Any, list[int]]:
        """The on-device LM, its tokenizer and the chat prompt's ids, with room for `reserve` more tokens in
        the cache (a typed error otherwise)."""
        lm, tokenizer = self._model("generate")
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        if len(prompt) + reserve > lm.cache_len:
            raise RequestRejected(
                f"prompt of {len(prompt)} tokens exceeds the on-device cache ({lm.cache_len})"
            )
        return lm, tokenizer, prompt

    def _generate_sync(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        lm, tokenizer, prompt = self._prompt(messages, reserve=1)
        room = lm.cache_len - len(prompt)
        with self._lock:
            tokens = lm.greedy(prompt, min(max_new_tokens, room))
        eos = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
        cut = next((i for i, t in enumerate(tokens) if t in eos), len(tokens))
        return str(tokenizer.decode(tokens[:cut], skip_special_tokens=True))

    def _choose_sync(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        from hai_tools.likelihood import candidate_ids, choice_probabilities_from

        tokenizer = self._model("generate")[1]
        ids = candidate_ids(tokenizer, choices)
        lm, _, prompt = self._prompt(messages, reserve=max(map(len, ids)))
        with self._lock:
            scores = lm.continuation_logprobs(prompt, ids)
        probabilities = choice_probabilities_from(scores)
        return dict(zip(choices, map(float, probabilities), strict=True))

    async def choose(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        if not self.supports("choose"):
            raise BackendUnavailable("tflite backend has no on-device reasoner")
        return await asyncio.to_thread(self._choose_sync, messages, choices)

    async def generate(
        self, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None = None
    ) -> str:
        if not self.supports("generate"):
            raise BackendUnavailable("tflite backend has no on-device reasoner")
        if adapter:
            raise RequestRejected("tflite backend serves no adapters")
        return await asyncio.to_thread(self._generate_sync, messages, max_new_tokens)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.supports("embed"):
            raise BackendUnavailable("tflite backend has no embedder")
        return await asyncio.to_thread(self._embed_sync, texts)

    async def health(self) -> bool:
        return bool(self._ids)

    async def close(self) -> None:
        return None
