"""The protocol every backend implements: generate / choose / embed / health. `choose` is the constrained
decision among fixed answers (the screening label): likelihood scoring locally and on-device, structured-output
choice on vLLM; a backend that cannot constrain its answer does not offer it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hai_tools.errors import HaiError
from skills.contracts import Backend as BackendName
from skills.contracts import ModelIdentity


def model_capability(capability: str) -> str:
    """The model that serves `capability`: `choose` is answered by the generation model."""
    return "generate" if capability == "choose" else capability


class BackendUnavailable(Exception):
    """A backend cannot serve this call (down, misconfigured, lacks the capability)."""


class RequestRejected(HaiError):
    """The request itself cannot be served (an adapter no backend serves, a prompt too long, a 4xx): the caller
    gets it back typed, and it never counts against a backend's circuit breaker."""


@runtime_checkable
class Backend(Protocol):
    name: BackendName

    def identity(self, capability: str, adapter: str | None = None) -> ModelIdentity:
        """The model that answers calls of `capability` ('generate' or 'embed'); for a generation call that named
        an adapter, that adapter."""
        ...

    def supports(self, capability: str) -> bool: ...

    def serves_adapter(self, adapter: str) -> bool:
        """Whether `generate(..., adapter=adapter)` can be answered here."""
        ...

    async def generate(
        self, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None = None
    ) -> str:
        """Greedy completion of a chat."""
        ...

    async def choose(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        """P(choice) for each of `choices` as the answer to the chat (one-hot where only the choice is known)."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """L2-normalised sentence embeddings."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...
