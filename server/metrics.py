"""``/metrics``: the Prometheus text format of this sidecar (prometheus-client).

The turn metrics are the process's (:mod:`voiceforge.telemetry`); this app adds what only it
knows, read at each scrape: its live conversations by kind, its event-loop lag, and whether it
is draining. Like every route it needs the API key (Prometheus sends it with
``authorization: {credentials: <FORGE_API_KEY>}`` in its scrape config).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.auth import protected_router

router = protected_router(tags=["metrics"])


class AppCollector(Collector):
    """Gauges of one app, read from its state at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self):  # noqa: ANN201 - the Collector protocol
        live = GaugeMetricFamily("forge_active_conversations", "Live conversations of this sidecar, by kind",
                                 labels=["kind"])
        counts: dict[str, int] = {}
        for conn in self.state.connections.status():
            counts[conn["kind"]] = counts.get(conn["kind"], 0) + 1
        for kind in ("phone", "browser", "webrtc", "device", "realtime"):
            counts.setdefault(kind, 0)
        for kind, n in sorted(counts.items()):
            live.add_metric([kind], n)
        yield live
        lag = GaugeMetricFamily("forge_event_loop_lag_seconds", "How late a 10 ms timer fires on the event loop, s",
                                labels=["quantile"])
        summary = self.state.lag.summary()
        lag.add_metric(["0.5"], summary["p50_ms"] / 1000)
        lag.add_metric(["0.99"], summary["p99_ms"] / 1000)
        lag.add_metric(["1"], summary["max_ms"] / 1000)
        yield lag
        monitor = getattr(self.state, "load", None)
        yield GaugeMetricFamily("forge_load", "This sidecar's load (0-1): the larger of its CPU share and its STT "
                                "queue's fill; new calls are refused past FORGE_MAX_LOAD",
                                value=monitor.load() if monitor is not None else 0.0)
        yield GaugeMetricFamily("forge_draining", "1 while the sidecar drains (it refuses new calls)",
                                value=1 if getattr(self.state, "draining", False) else 0)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """The Prometheus text exposition format (prometheus-client's latest): turns, voice-to-voice and stage histograms,
    STT queue depth, errors by kind, live conversations, event-loop lag."""
    state = request.app.state
    own = getattr(state, "metrics_registry", None)
    if own is None:
        own = state.metrics_registry = CollectorRegistry(auto_describe=False)
        own.register(AppCollector(state))
    return Response(generate_latest(REGISTRY) + generate_latest(own), media_type=CONTENT_TYPE_LATEST)
