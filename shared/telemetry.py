"""OpenTelemetry: one trace per touchpoint, from the HTTP request through the outbox and Kafka
headers into every consumer and the faust agent.

The exporter follows the standard variables: OTEL_TRACES_EXPORTER=otlp|console|none (otlp also when
only OTEL_EXPORTER_OTLP_ENDPOINT is set), OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_* for the endpoint.
With nothing set, spans are still created and propagated but not exported.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_configured = False


def _exporter_name() -> str:
    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        name = "otlp"
    return name or "none"


def setup_tracing(service_name: str) -> None:
    """Install the global tracer provider once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    for name in _exporter_name().split(","):
        name = name.strip()
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def carrier_from_current() -> dict[str, str]:
    """The current span's W3C trace context, to store in an envelope or outbox row."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return _propagator.extract(dict(carrier or {}))


def kafka_headers(carrier: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in (carrier or {}).items() if v]


def carrier_from_kafka_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    wanted = {"traceparent", "tracestate"}
    return {k: v.decode("utf-8", "replace") for k, v in (headers or ()) if k in wanted and v is not None}


def trace_id_hex() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def carrier_for_span(span: trace.Span) -> dict[str, str]:
    """The W3C trace context of a span that is not the current one (e.g. one of a batch)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier
