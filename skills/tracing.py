"""OpenTelemetry spans of the serving side, optional and off by default (`tracing.enabled` in the server config).
Off, no tracer provider is installed: the MCP SDK's own request spans and ours are no-ops. On, the server installs
its tracer provider as the process's (the SDK's middleware traces through the global one), exporting over
OTLP/gRPC or to stderr (stdout is the stdio transport). Spans: the SDK's per MCP request (`tools/call screen`,
with `gen_ai.tool.name` and the caller's trace context from `_meta`), ours per backend attempt inside it
(`backend generate`: `hai.backend`, `hai.capability`, `hai.outcome`), and the audited call's outcome, backend
and abstention rule set on the request's span. No request text, case or answer is recorded."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from skills.config import TracingSettings


class Tracing:
    def __init__(self, settings: TracingSettings | None = None, exporter: Any = None) -> None:
        """`exporter`: a span exporter to use instead of the configured one (tests)."""
        settings = settings or TracingSettings()
        self.enabled = settings.enabled or exporter is not None
        self.provider: Any = None
        self.tracer: Any = None
        if not self.enabled:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif settings.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            insecure = settings.endpoint.startswith("http://")
            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint, insecure=insecure))
            )
        from opentelemetry import trace

        trace.set_tracer_provider(self.provider)  # once per process: a second server keeps the first's
        self.tracer = self.provider.get_tracer("hai-tools")

    def span(self, name: str, **attributes: Any) -> Any:
        """A span around a block (a no-op when tracing is off); None attributes are left out."""
        if self.tracer is None:
            return nullcontext()
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        with self.tracer.start_as_current_span(
            name, attributes={k: v for k, v in attributes.items() if v is not None}
        ) as span:
            yield span

    def annotate(self, **attributes: Any) -> None:
        """Set attributes on the current span (the MCP request's), if tracing is on."""
        if self.tracer is None:
            return
        from opentelemetry import trace

        span = trace.get_current_span()
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)

    def observe(self, tool: str, outcome: str, backend: str | None, detail: str | None, _: float) -> None:
        """The audit log's observer: the call's outcome on the request's span (the rule, not the text)."""
        from hai_tools.audit import abstention_of

        stopped = abstention_of(outcome, detail)
        rule = stopped[0] if stopped else None
        self.annotate(**{"hai.tool": tool, "hai.outcome": outcome, "hai.backend": backend, "hai.rule": rule})

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
