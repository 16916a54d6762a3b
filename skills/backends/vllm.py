"""vLLM backend over its OpenAI-compatible HTTP API: /v1/chat/completions and /v1/embeddings, the adapter
chosen by served model name; at start it checks that /v1/models serves the configured release."""

from __future__ import annotations

import os
from typing import Any

import httpx

from skills.backends.base import BackendUnavailable
from skills.contracts import Backend as BackendName
from skills.contracts import ModelIdentity


class VLLMBackend:
    name: BackendName = "vllm"

    def __init__(
        self,
        base_url: str,
        served_model: str | None,
        embed_model: str | None = None,
        identity: ModelIdentity | None = None,
        api_key_env: str = "VLLM_API_KEY",
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.embed_model = embed_model
        self._identity = identity or ModelIdentity(
            base=served_model or embed_model or "unknown", release=served_model
        )
        headers = {}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._served: set[str] = set()

    def supports(self, capability: str) -> bool:
        return (capability in ("generate", "choose") and bool(self.served_model)) or (
            capability == "embed" and bool(self.embed_model)
        )

    def identity(self, capability: str) -> ModelIdentity:
        return self._identity

    def serves_adapter(self, adapter: str) -> bool:
        """Adapters are served models (`--lora-modules`); before /v1/models was read, assume it may."""
        return not self._served or adapter in self._served

    async def check_ready(self) -> None:
        """Refuse to serve unless /v1/models lists the configured release (and embed model)."""
        try:
            response = await self._client.get("/v1/models")
            response.raise_for_status()
            self._served = {m["id"] for m in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise BackendUnavailable(f"vLLM at {self.base_url} is not ready: {type(exc).__name__}") from None
        wanted = {m for m in (self.served_model, self.embed_model) if m}
        missing = wanted - self._served
        if missing:
            raise BackendUnavailable(f"vLLM at {self.base_url} does not serve {sorted(missing)}")

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=payload)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"vLLM request failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise BackendUnavailable(f"vLLM answered HTTP {response.status_code}")
        data: dict[str, Any] = response.json()
        return data

    async def generate(
        self, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None = None
    ) -> str:
        model = adapter or self.served_model
        if not model:
            raise BackendUnavailable("vLLM backend has no served model for generation")
        if adapter and self._served and adapter not in self._served:
            raise BackendUnavailable(f"vLLM does not serve adapter '{adapter}'")
        return await self._chat(
            {"model": model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0.0}
        )

    async def _chat(self, payload: dict[str, Any]) -> str:
        """The text of a chat completion (a typed error when the answer has none)."""
        data = await self._post("/v1/chat/completions", payload)
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise BackendUnavailable("vLLM answer has no message content") from None

    async def choose(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        """vLLM's structured-output choice. Current vLLM ignores the older `guided_choice` and answers free
        text with HTTP 200, so the answer is checked: anything but one of `choices` is a backend failure."""
        if not self.served_model:
            raise BackendUnavailable("vLLM backend has no served model for generation")
        payload = {
            "model": self.served_model,
            "messages": messages,
            "max_tokens": 16,
            "temperature": 0.0,
            "structured_outputs": {"choice": choices},
        }
        answer = (await self._chat(payload)).strip()
        if answer not in choices:
            raise BackendUnavailable(
                "vLLM did not honour the structured-output choice (answer is not a choice)"
            )
        return {c: float(c == answer) for c in choices}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.embed_model:
            raise BackendUnavailable("vLLM backend has no embedding model")
        data = await self._post("/v1/embeddings", {"model": self.embed_model, "input": texts})
        return [
            list(map(float, item["embedding"])) for item in sorted(data["data"], key=lambda d: d["index"])
        ]

    async def health(self) -> bool:
        try:
            return (await self._client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        await self._client.aclose()
