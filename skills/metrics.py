"""Prometheus metrics of the serving side (`GET /metrics`, admin callers only): per tool and backend latency
histograms, failovers, abstentions by rule, and at each scrape the circuit breakers' states and the backends'
queue depths read from the router. One registry per server (`ServingMetrics`), never the process-global one,
so two servers in one process (tests, benches) do not share counts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hai_tools.audit import abstention_of

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _RouterState(Collector):
    def __init__(self, router: Any) -> None:
        self.router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        breakers = GaugeMetricFamily(
            "hai_breaker_state",
            "Circuit breaker per backend and capability: 0 closed, 1 half-open, 2 open",
            labels=["backend", "capability"],
        )
        for key, breaker in self.router.breakers.items():
            backend, _, capability = key.partition(":")
            breakers.add_metric([backend, capability], BREAKER_STATES[breaker.state])
        yield breakers
        queues = GaugeMetricFamily(
            "hai_backend_queue_depth",
            "Calls in flight or waiting per backend and capability",
            labels=["backend", "capability"],
        )
        for key, depth in self.router.pending.items():
            backend, _, capability = key.partition(":")
            queues.add_metric([backend, capability], depth)
        yield queues


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "hai_tool_seconds",
            "Tool call latency by tool, backend that answered (none: refused or failed) and outcome",
            ["tool", "backend", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.failovers = Counter(
            "hai_failovers_total",
            "Backend attempts that failed and passed the call on, by backend and capability",
            ["backend", "capability"],
            registry=self.registry,
        )
        self.abstentions = Counter(
            "hai_abstentions_total",
            "Requests refused or answers withheld by the guard, by rule and where it fired",
            ["rule", "where"],
            registry=self.registry,
        )

    def observe(
        self, tool: str, outcome: str, backend: str | None, detail: str | None, seconds: float
    ) -> None:
        """An audited call ended (hai_tools.audit's observer): its latency; an abstention's rule and place."""
        self.latency.labels(tool, backend or "none", outcome).observe(seconds)
        stopped = abstention_of(outcome, detail)
        if stopped is not None:
            self.abstentions.labels(*stopped).inc()

    def failover(self, backend: str, capability: str) -> None:
        self.failovers.labels(backend, capability).inc()

    def watch(self, router: Any) -> None:
        """Report the breakers and queues of `router` at every scrape."""
        self.registry.register(_RouterState(router))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
