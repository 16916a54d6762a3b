"""Failover across backends in a configured order, with a per-call timeout and a circuit breaker per
backend; when every backend fails the caller gets a typed `AllBackendsFailed`, never a placeholder."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hai_tools.errors import HaiError
from skills.backends.base import Backend

log = logging.getLogger("skills")
T = TypeVar("T")


class AllBackendsFailed(HaiError):
    """No configured backend could serve the call; the message lists why each one failed."""


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; lets one trial call through after `cooldown_s`."""

    threshold: int = 3
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None

    def allows(self) -> bool:
        if self.opened_at is None:
            return True
        return time.monotonic() - self.opened_at >= self.cooldown_s

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else ("half-open" if self.allows() else "open")


@dataclass
class FailoverRouter:
    backends: list[Backend]
    timeout_s: float = 30.0
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for backend in self.backends:
            self.breakers[backend.name] = CircuitBreaker(self.breaker_threshold, self.breaker_cooldown_s)

    def candidates(self, capability: str) -> list[Backend]:
        return [b for b in self.backends if b.supports(capability)]

    async def call(self, capability: str, fn: Callable[[Backend], Awaitable[T]]) -> tuple[T, Backend]:
        """Run `fn` on the first healthy backend that succeeds; return its result and the backend."""
        reasons: list[str] = []
        for backend in self.candidates(capability):
            breaker = self.breakers[backend.name]
            if not breaker.allows():
                reasons.append(f"{backend.name}: circuit open")
                continue
            try:
                result = await asyncio.wait_for(fn(backend), timeout=self.timeout_s)
            except TimeoutError:
                breaker.failure()
                reasons.append(f"{backend.name}: timed out after {self.timeout_s:g}s")
            except Exception as exc:  # a backend's failure is the next one's turn, whatever it was
                breaker.failure()
                reasons.append(f"{backend.name}: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                breaker.success()
                return result, backend
            log.warning("backend failed over: %s", reasons[-1])
        if not reasons:
            raise AllBackendsFailed(f"no backend is configured for '{capability}'")
        raise AllBackendsFailed(f"every backend failed for '{capability}': " + "; ".join(reasons))
