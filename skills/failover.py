"""Failover across backends in a configured order, blaming the right party.

- A circuit breaker per (backend, capability): embeddings succeeding never reset a broken generation path, and a
  server that cannot constrain a choice keeps generating. It opens after `threshold` consecutive backend failures;
  after `cooldown_s` it is half-open and admits exactly one trial call; the trial's outcome closes or reopens it.
- Errors caused by the request (`RequestRejected`: an unknown adapter, a vLLM 4xx, a prompt too long for a
  backend) go back to the caller typed, at once, and never count against a backend.
- Every call has an overall deadline: each backend gets what is left of it (at most its per-attempt timeout),
  and when it is spent the caller gets `AllBackendsFailed` naming it, never a wait of backends x timeout.
- Each backend has a bounded queue per capability (calls in flight or waiting), keyed as the breakers are: a
  queue full of minute-long generations never turns away a 20 ms embedding. A full one is skipped; when every
  candidate is full the caller gets `Overloaded` with a retry-after hint (HTTP 429 on REST) instead of waiting.

When every backend fails the caller gets a typed `AllBackendsFailed`, never a placeholder. With tracing on
(skills/tracing.py), each attempt is a span naming its backend, capability and outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hai_tools.errors import HaiError
from skills.backends.base import Backend, RequestRejected

log = logging.getLogger("skills")
T = TypeVar("T")


class AllBackendsFailed(HaiError):
    """No configured backend could serve the call; the message lists why each one failed."""


class Overloaded(HaiError):
    """Every backend that could serve the call has a full queue: retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class CircuitBreaker:
    """Closed; open after `threshold` consecutive failures; half-open after `cooldown_s`, admitting one trial."""

    threshold: int = 3
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def admit(self) -> bool:
        """Whether a call may go to the backend now; in half-open, only the first caller (the trial) may."""
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at < self.cooldown_s or self.trial_in_flight:
            return False
        self.trial_in_flight = True
        return True

    def success(self) -> None:
        self.failures, self.opened_at, self.trial_in_flight = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.trial_in_flight or self.failures >= self.threshold:
            self.opened_at = time.monotonic()  # a failed trial reopens for a full cooldown
        self.trial_in_flight = False

    def release(self) -> None:
        """The admitted call ended without a verdict on the backend (the caller's own error): the trial
        slot is free again."""
        self.trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at < self.cooldown_s:
            return "open"
        return "half-open"


@dataclass
class FailoverRouter:
    backends: list[Backend]
    timeout_s: float = 30.0
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    deadline_s: float = 60.0
    max_queue: int = 16
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    on_failover: Callable[[str, str], None] | None = None  # (backend, capability): the server's metrics
    span: Callable[..., AbstractContextManager[Any]] | None = None  # (name, **attributes): tracing's spans

    def __post_init__(self) -> None:
        for backend in self.backends:
            for capability in ("generate", "choose", "embed"):
                self.pending[self.key(backend, capability)] = 0
                self.breakers[self.key(backend, capability)] = CircuitBreaker(
                    self.breaker_threshold, self.breaker_cooldown_s
                )

    @staticmethod
    def key(backend: Backend, capability: str) -> str:
        return f"{backend.name}:{capability}"

    def candidates(self, capability: str) -> list[Backend]:
        return [b for b in self.backends if b.supports(capability)]

    async def call(self, capability: str, fn: Callable[[Backend], Awaitable[T]]) -> tuple[T, Backend]:
        """Run `fn` on the first backend that admits the call and succeeds, within the overall deadline;
        return its result and the backend."""
        deadline = time.monotonic() + self.deadline_s
        reasons: list[str] = []
        full = 0
        for backend in self.candidates(capability):
            left = deadline - time.monotonic()
            if left <= 0:
                reasons.append(
                    f"{backend.name}: not tried, the call's deadline of {self.deadline_s:g}s passed"
                )
                continue
            queue = self.key(backend, capability)
            if self.pending[queue] >= self.max_queue:
                full += 1
                reasons.append(f"{backend.name}: queue full ({self.max_queue})")
                continue
            breaker = self.breakers[self.key(backend, capability)]
            if not breaker.admit():
                reasons.append(f"{backend.name}: circuit {breaker.state}")
                continue
            budget = min(self.timeout_s, left)
            self.pending[queue] += 1
            span = nullcontext() if self.span is None else self.span(f"backend {capability}")
            with span as attempt:
                try:
                    result = await asyncio.wait_for(fn(backend), timeout=budget)
                except (RequestRejected, asyncio.CancelledError) as exc:
                    breaker.release()  # the caller's mistake, or the caller left: no verdict on the backend
                    _outcome(attempt, backend, capability, type(exc).__name__)
                    raise
                except TimeoutError:
                    breaker.failure()
                    reasons.append(f"{backend.name}: timed out after {budget:.3g}s")
                except Exception as exc:  # a backend's failure is the next one's turn, whatever it was
                    breaker.failure()
                    reasons.append(f"{backend.name}: {type(exc).__name__}: {str(exc)[:200]}")
                else:
                    breaker.success()
                    _outcome(attempt, backend, capability, "ok")
                    return result, backend
                finally:
                    self.pending[queue] -= 1
                _outcome(attempt, backend, capability, "failed")
            log.warning("backend failed over: %s", reasons[-1])
            if self.on_failover is not None:
                self.on_failover(backend.name, capability)  # labelled as the breakers are keyed
        if not reasons:
            raise AllBackendsFailed(f"no backend is configured for '{capability}' (or available: see /ready)")
        if full and full == len(reasons):
            raise Overloaded(
                f"every backend for '{capability}' is at its queue limit ({self.max_queue}); retry later",
                retry_after_s=max(1.0, self.timeout_s / 4),
            )
        raise AllBackendsFailed(f"every backend failed for '{capability}': " + "; ".join(reasons))


def _outcome(span: Any, backend: Backend, capability: str, outcome: str) -> None:
    if span is not None:
        span.set_attribute("hai.backend", backend.name)
        span.set_attribute("hai.capability", capability)
        span.set_attribute("hai.outcome", outcome)
