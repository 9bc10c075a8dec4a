"""Prometheus metrics of one app instance (its own registry, so several apps can coexist in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INFERENCE_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("facerecon_requests", "HTTP requests by route and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("facerecon_request_duration_seconds", "HTTP request latency by route", ("route",),
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("facerecon_requests_in_flight", "reconstruction requests admitted and not finished",
                               registry=r)
        self.rejected = Counter("facerecon_requests_rejected", "reconstruction requests refused with 503 (overload)",
                                registry=r)
        self.connections_refused = Counter(
            "facerecon_connections_refused", "connections closed by the HTTP protocol guard before a request "
            "reached the app, by reason (request-timeout, headers-too-large, bad-request, idle)", ("reason",),
            registry=r)
        self.queue_depth = Gauge("facerecon_batch_queue_depth", "requests waiting for a network batch", registry=r)
        self.batch_size = Histogram("facerecon_batch_size", "faces per reconstruction-network run",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.inference = Histogram("facerecon_inference_seconds", "reconstruction-network time per batch",
                                   buckets=_INFERENCE_BUCKETS, registry=r)
        self.detection = Histogram("facerecon_detection_seconds", "face-detector time per image",
                                   buckets=_INFERENCE_BUCKETS, registry=r)
        self.faces_per_image = Histogram("facerecon_faces_per_image", "faces reconstructed per image",
                                         buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32), registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
