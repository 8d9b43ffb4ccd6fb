"""Metrics (Prometheus) and traces (OpenTelemetry) of the turns this process serves.

Metrics live in prometheus-client's process-wide registry; the sidecar serves them at
``/metrics`` in the Prometheus text format (https://prometheus.io/docs/instrumenting/exposition_formats/),
with its own per-app gauges (live conversations, event-loop lag) added there:

- ``forge_turns_total{channel, outcome}``: turns answered ("ok", "error": a stage failed and the
  caller heard an apology; "interrupted");
- ``forge_voice_to_voice_seconds{channel}``: from the end of the caller's speech to the first
  agent audio, as the sidecar measured it (the caller hears it one network leg later);
- ``forge_turn_stage_seconds{stage}``: each stage of the waterfall (STT, LLM first token, tool, ...);
- ``forge_stt_queue_depth``: utterances waiting for or in the embedded speech-to-text;
- ``forge_errors_total{kind}``: failures by kind (``stt``, ``llm``, ``tts`` a provider failed
  over or failed; ``turn`` a turn apologised; ``tool`` a tool failed; ``media_stream`` a
  malformed Twilio message closed its stream).

Traces: one span per turn ("turn") with a child span per stage, when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP, the exporter's own variables apply:
https://opentelemetry.io/docs/specs/otel/protocol/exporter/); nothing is exported otherwise.
Spans carry the channel, the persona, the tools' names, the voice-to-voice time and the error
kind, never a transcript, a reply or a phone number.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from voiceforge.records import TurnRecord, first_audio_ms, stage_spans

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Histogram buckets, s: fine around the 0.5-1.5 s a caller notices."""
TURNS = Counter("forge_turns", "Turns answered, by channel and outcome", ["channel", "outcome"])
VOICE_TO_VOICE = Histogram("forge_voice_to_voice_seconds", "End of the caller's speech to the first agent audio, s",
                           ["channel"], buckets=LATENCY_BUCKETS)
STAGE = Histogram("forge_turn_stage_seconds", "Each stage of a turn, s", ["stage"], buckets=LATENCY_BUCKETS)
STT_QUEUE = Gauge("forge_stt_queue_depth", "Utterances waiting for or in the embedded speech-to-text")
ERRORS = Counter("forge_errors", "Failures by kind", ["kind"])

_stt_lock = threading.Lock()
_stt_waiting = 0
_tracing_lock = threading.Lock()
_tracing_configured = False


def stt_enter() -> None:
    """An utterance joins the embedded STT's queue (waiting for its thread, or on it)."""
    global _stt_waiting
    with _stt_lock:
        _stt_waiting += 1
        STT_QUEUE.set(_stt_waiting)


def stt_leave() -> None:
    """An utterance left the embedded STT (transcribed, or failed)."""
    global _stt_waiting
    with _stt_lock:
        _stt_waiting = max(0, _stt_waiting - 1)
        STT_QUEUE.set(_stt_waiting)


def stt_queue_depth() -> int:
    """Utterances waiting for or in the embedded STT now."""
    return _stt_waiting


def count_error(kind: str) -> None:
    """Count one failure of ``kind`` (see the module docstring)."""
    ERRORS.labels(kind=kind).inc()


def configure_tracing(endpoint: str | None, service_name: str = "forge-sidecar") -> bool:
    """Export spans over OTLP/HTTP to ``endpoint`` (once per process; nothing when it is None).

    ``endpoint`` is ``OTEL_EXPORTER_OTLP_ENDPOINT``, a base URL: spans go to ``<endpoint>/v1/traces``.

    Returns:
        True when an exporter is installed (now or before); False when tracing stays off.
    """
    global _tracing_configured
    if not endpoint:
        return False
    with _tracing_lock:
        if _tracing_configured:
            return True
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        traces = endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
        trace.set_tracer_provider(provider)
        _tracing_configured = True
        log.info("OpenTelemetry traces go to %s", traces)
        return True


def flush_traces(timeout_ms: int = 5000) -> None:
    """Export the spans still buffered (at shutdown, or before a test reads its collector)."""
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush(timeout_ms)


def observe_turn(record: TurnRecord, channel: str, persona: str) -> None:
    """Count a finished turn, time its stages, and (with tracing on) export its spans.

    Args:
        record: the turn, with ``timings_ms`` (ms after the end of the caller's speech).
        channel: "phone", "browser", "device", "api", ...
        persona: the agent's id.
    """
    outcome = "error" if record.error else "interrupted" if record.interrupted else "ok"
    TURNS.labels(channel=channel, outcome=outcome).inc()
    timings = record.timings_ms or {}
    first = first_audio_ms(timings)
    if first is not None:
        VOICE_TO_VOICE.labels(channel=channel).observe(first / 1000)
    stages = stage_spans(timings)
    for label, start, end in stages:
        STAGE.labels(stage=label).observe(max(0.0, end - start) / 1000)
    kinds = sorted({str(f.get("stage")) for f in record.failover if f.get("stage")})
    for kind in kinds:
        count_error(kind)
    if record.error:
        count_error("turn")
    for call in record.tool_calls:
        if call.get("error"):
            count_error("tool")
    if _tracing_configured:
        _export_spans(record, channel, persona, stages, first, kinds)


def _export_spans(record: TurnRecord, channel: str, persona: str, stages: list[tuple[str, float, float]],
                  first: float | None, kinds: list[str]) -> None:
    """The turn as a span with a child per stage, placed on the wall clock by its last mark (now)."""
    from opentelemetry import trace

    tracer = trace.get_tracer("voiceforge")
    timings = record.timings_ms or {}
    last = max([0.0, *(float(v) for k, v in timings.items() if isinstance(v, int | float) and not k.endswith("_ms")
                       and not k.startswith("end_of_turn"))])
    zero_ns = time.time_ns() - int(last * 1e6)
    start = min([0.0, *(s for _, s, _ in stages)])
    attributes: dict[str, Any] = {"forge.channel": channel, "forge.persona": persona,
                                  "forge.tools": [str(c.get("name")) for c in record.tool_calls],
                                  "forge.outcome": "error" if record.error else "ok",
                                  "forge.interrupted": record.interrupted}
    if first is not None:
        attributes["forge.voice_to_voice_ms"] = first
    if kinds:
        attributes["forge.failed_stages"] = kinds
    span = tracer.start_span("turn", start_time=zero_ns + int(start * 1e6), attributes=attributes)
    context = trace.set_span_in_context(span)
    for label, s, e in stages:
        child = tracer.start_span(label, context=context, start_time=zero_ns + int(s * 1e6),
                                  attributes={"forge.stage": label})
        child.end(end_time=zero_ns + int(e * 1e6))
    span.end(end_time=zero_ns + int(last * 1e6))
