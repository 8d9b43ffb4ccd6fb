"""Observability of a real sidecar (`forge serve` in a child process): /metrics read back by
prometheus-client's own parser, and OpenTelemetry spans received over OTLP/HTTP by a collector
on loopback, decoded with the OTLP protobufs."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import serve
from voiceforge.audio.codecs import wrap_wav

pytestmark = pytest.mark.integration


def _collector() -> tuple[FastAPI, list, threading.Event]:
    """An OTLP/HTTP trace receiver (https://opentelemetry.io/docs/specs/otlp/#otlphttp): every span it got."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    app, spans, got_turn = FastAPI(), [], threading.Event()

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        for resource in message.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                spans.extend((service, span) for span in scope.spans)
        if any(span.name == "turn" for _, span in spans):
            got_turn.set()
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    return app, spans, got_turn


def _attributes(span) -> dict:  # noqa: ANN001
    out = {}
    for a in span.attributes:
        v = a.value
        kind = v.WhichOneof("value")
        out[a.key] = [x.string_value for x in v.array_value.values] if kind == "array_value" else getattr(v, kind)
    return out


async def test_metrics_and_traces_of_a_spoken_turn(tmp_path, speak):
    from forge.processes import local_sidecar
    from voiceforge.config import load_settings

    settings = load_settings(forge_data_dir=tmp_path / "data")
    pcm, rate = speak("How many customers are there?")
    app, spans, got_turn = _collector()
    with serve(app) as collector:
        async with local_sidecar(settings=settings, OTEL_EXPORTER_OTLP_ENDPOINT=collector,
                                 OTEL_BSP_SCHEDULE_DELAY="200") as (base, _token, key):
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                assert (await http.get("/metrics")).status_code == 401  # like every route: the key first
                auth = {"Authorization": f"Bearer {key}"}
                turn = await http.post("/voice-agent/process", headers=auth,
                                       files={"file": ("q.wav", wrap_wav(pcm, rate), "audio/wav")})
                assert turn.status_code == 200 and "40" in turn.json()["reply"], turn.text
                scraped = await http.get("/metrics", headers=auth)
            await asyncio.to_thread(got_turn.wait, 15)  # the batch processor sends within 200 ms

    assert scraped.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert values[("forge_turns_total", (("channel", "api"), ("outcome", "ok")))] == 1
    assert values[("forge_voice_to_voice_seconds_count", (("channel", "api"),))] == 1
    assert 0 < values[("forge_voice_to_voice_seconds_sum", (("channel", "api"),))] < 30
    assert values[("forge_turn_stage_seconds_count", (("stage", "STT"),))] == 1
    assert values[("forge_stt_queue_depth", ())] == 0  # the utterance left the queue
    assert ("forge_active_conversations", (("kind", "phone"),)) in values
    assert families["forge_event_loop_lag_seconds"].type == "gauge"
    assert families["forge_errors"].type == "counter"

    turns = [s for _, s in spans if s.name == "turn"]
    assert len(turns) == 1 and {service for service, _ in spans} == {"forge-sidecar"}
    (root,) = turns
    children = {s.name: s for _, s in spans if s.parent_span_id == root.span_id}
    assert {"STT", "LLM first token", "TTS first audio"} <= set(children), set(children)
    assert all(root.start_time_unix_nano <= c.start_time_unix_nano <= c.end_time_unix_nano <= root.end_time_unix_nano
               for c in children.values())
    attributes = _attributes(root)
    assert attributes["forge.channel"] == "api" and attributes["forge.persona"] == "customer_service"
    assert attributes["forge.tools"] == ["run_sql"] and attributes["forge.voice_to_voice_ms"] > 0
    said = " ".join(str(v) for _, s in spans for v in _attributes(s).values()).lower()
    assert "how many customers" not in said and "the answer is" not in said  # no transcript, no reply
