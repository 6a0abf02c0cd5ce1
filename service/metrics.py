"""Prometheus metrics, one registry per app (so several apps, e.g. in tests, never share counters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("http_requests_total", "HTTP requests by route, model and status",
                                ["method", "route", "model", "status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency by route, model and status",
                                 ["method", "route", "model", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.inference = Histogram("model_inference_seconds", "model time per model and job (model: one batched "
                                   "ONNX Runtime run; explain and other unbatched jobs: sent to answered)",
                                   ["model", "graph"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("model_batch_size", "images per ONNX Runtime run", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self.provider = Gauge("model_execution_provider", "1 for the execution provider each model version runs on; "
                              "fallback=true: CUDA was tried (providers=auto) and could not start",
                              ["model", "version", "provider", "requested", "fallback"], registry=self.registry)

    def observe_request(self, method: str, route: str, model: str, status: int, seconds: float) -> None:
        key = (method, route, model, status)
        children = self._request_children.get(key)
        if children is None:  # prometheus-client's labels() lookup is the costly part: once per label set
            labels = (method, route, model, str(status))
            children = self._request_children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def observe_run(self, model: str, graph: str, batch: int, seconds: float) -> None:
        self.inference.labels(model, graph).observe(seconds)
        if graph == "model":
            self.batch_size.labels(model).observe(batch)

    def record_provider(self, model: str, version: str, provider: str, requested: str, fallback: bool) -> None:
        self.provider.labels(model, version, provider, requested, str(fallback).lower()).set(1)
