"""vLLM backend over its OpenAI-compatible HTTP API: /v1/chat/completions on the generation server and
/v1/embeddings on the embedding server (vLLM serves one model per server: two base URLs), the adapter chosen by
served model name. Each server's /v1/models must list what it is configured to serve: at start and every
`recheck_s` after, a capability whose model is not listed is unavailable (the router skips it; `/ready` says
why) until a later check finds it. A result names the adapter that answered. Errors the request caused (HTTP
4xx but 408 and 429, an adapter the server does not list) go back to the caller as `RequestRejected`."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx

from skills.backends.base import BackendUnavailable, RequestRejected, model_capability
from skills.contracts import Backend as BackendName
from skills.contracts import ModelIdentity

log = logging.getLogger("skills")


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
        embed_base_url: str | None = None,
        recheck_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.embed_base_url = (embed_base_url or base_url).rstrip("/")
        self.served_model = served_model
        self.embed_model = embed_model
        self.recheck_s = recheck_s
        self._identity = identity or ModelIdentity(
            base=served_model or embed_model or "unknown", release=served_model
        )
        headers = {}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._clients = {
            "generate": httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s),
            "embed": httpx.AsyncClient(base_url=self.embed_base_url, headers=headers, timeout=timeout_s),
        }
        self._served: dict[str, set[str]] = {"generate": set(), "embed": set()}
        # why a configured capability is unavailable (None: available); unchecked until check_ready ran
        self.unavailable: dict[str, str | None] = {
            cap: "not checked yet"
            for cap, model in (("generate", served_model), ("embed", embed_model))
            if model
        }
        self._watch: asyncio.Task[None] | None = None

    def _configured(self, capability: str) -> bool:
        capability = model_capability(capability)
        return bool(
            self.served_model
            if capability == "generate"
            else self.embed_model
            if capability == "embed"
            else None
        )

    def supports(self, capability: str) -> bool:
        """Configured for it, and the last /v1/models check found its model (before the first check: assume
        so, the router's breaker handles a server that is down)."""
        capability = model_capability(capability)
        reason = self.unavailable.get(capability)
        return self._configured(capability) and (reason is None or reason == "not checked yet")

    def identity(self, capability: str, adapter: str | None = None) -> ModelIdentity:
        """The model that answered: the release, or the adapter a call named (served under its own name)."""
        if adapter and model_capability(capability) == "generate" and adapter != self.served_model:
            return ModelIdentity(base=self._identity.base, adapter=adapter)
        return self._identity

    def serves_adapter(self, adapter: str) -> bool:
        """Adapters are served models (`--lora-modules`); before /v1/models was read, assume it may."""
        served = self._served["generate"]
        return not served or adapter in served

    async def check_ready(self) -> None:
        """Read /v1/models of each server; mark what is missing unavailable. Raises BackendUnavailable naming
        every problem when something configured is not served (the server logs it and carries on; `/ready`
        shows it)."""
        problems = []
        for capability, model in (("generate", self.served_model), ("embed", self.embed_model)):
            if not model:
                continue
            client = self._clients[capability]
            try:
                response = await client.get("/v1/models")
                response.raise_for_status()
                self._served[capability] = {m["id"] for m in response.json().get("data", [])}
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                self.unavailable[capability] = f"{client.base_url} is not ready: {type(exc).__name__}"
            else:
                self.unavailable[capability] = (
                    None
                    if model in self._served[capability]
                    else f"{client.base_url} does not serve {model!r}"
                )
            if self.unavailable[capability]:
                problems.append(f"vLLM {capability}: {self.unavailable[capability]}")
        if problems:
            raise BackendUnavailable("; ".join(problems))

    def watch(self) -> None:
        """Re-check /v1/models every `recheck_s` in the background (started by the server, stopped by close)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.recheck_s)
                try:
                    await self.check_ready()
                except BackendUnavailable as exc:
                    log.warning("%s", exc)

        if self._watch is None and self.unavailable:
            self._watch = asyncio.get_running_loop().create_task(loop())

    async def _post(self, capability: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._clients[capability].post(path, json=payload)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"vLLM request failed: {type(exc).__name__}") from None
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise RequestRejected(f"vLLM refused the request: HTTP {response.status_code}")
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
        if adapter and not self.serves_adapter(adapter):
            raise RequestRejected(f"vLLM does not serve adapter '{adapter}'")
        return await self._chat(
            {"model": model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0.0}
        )

    async def _chat(self, payload: dict[str, Any]) -> str:
        """The text of a chat completion (a typed error when the answer has none)."""
        data = await self._post("generate", "/v1/chat/completions", payload)
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
        try:
            answer = (await self._chat(payload)).strip()
        except (
            RequestRejected
        ) as exc:  # the 4xx is about our structured-output field, not the caller's request
            raise BackendUnavailable(f"vLLM refused the structured-output choice ({exc})") from None
        if answer not in choices:
            raise BackendUnavailable(
                "vLLM did not honour the structured-output choice (answer is not a choice)"
            )
        return {c: float(c == answer) for c in choices}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.embed_model:
            raise BackendUnavailable("vLLM backend has no embedding model")
        from hai_tools.models import EMBED_MAX_TOKENS

        body = {"model": self.embed_model, "input": texts, "truncate_prompt_tokens": EMBED_MAX_TOKENS}
        data = await self._post("embed", "/v1/embeddings", body)  # vLLM truncates as the other backends do
        return [
            list(map(float, item["embedding"])) for item in sorted(data["data"], key=lambda d: d["index"])
        ]

    async def health(self) -> bool:
        """Every configured server answers /health and lists its model (at the last check)."""
        for capability in self.unavailable:
            try:
                if (await self._clients[capability].get("/health")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return all(reason is None for reason in self.unavailable.values())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for client in self._clients.values():
            await client.aclose()
