"""Every Prometheus metric the service exports, on an injected registry.

No label ever takes a consumer id or a topic name (unbounded cardinality).
Fan-out counters are bumped once per broker message, with the delivery count as
the increment, never once per delivery.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from service import __version__

CLOSE_REASONS = ("client", "replaced", "consumer_closed", "slow_reader", "shutdown", "error")
EVICT_REASONS = ("ttl", "deleted")
DROP_REASONS = ("buffer_full", "broker")

# `*_created` series double the exposition and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The metric families, created on ``registry`` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = Gauge("unifrost_connections", "Open SSE streams.", registry=r)
        self.connections_opened = Counter(
            "unifrost_connections_opened", "SSE streams opened.", registry=r
        )
        self.connections_closed = Counter(
            "unifrost_connections_closed", "SSE streams closed, by reason.", ["reason"], registry=r
        )
        self.stream_duration = Histogram(
            "unifrost_stream_duration_seconds",
            "How long SSE streams stayed open.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.consumers = Gauge("unifrost_consumers", "Live consumers.", registry=r)
        self.consumers_created = Counter(
            "unifrost_consumers_created", "Consumers created.", registry=r
        )
        self.consumers_evicted = Counter(
            "unifrost_consumers_evicted", "Consumers removed, by reason.", ["reason"], registry=r
        )
        self.subscriptions = Gauge(
            "unifrost_subscriptions", "Consumer-topic subscriptions.", registry=r
        )
        self.broker_subscriptions = Gauge(
            "unifrost_broker_subscriptions",
            "Broker subscriptions held (one per topic).",
            registry=r,
        )
        self.messages_received = Counter(
            "unifrost_messages_received", "Messages received from the broker.", registry=r
        )
        self.messages_delivered = Counter(
            "unifrost_messages_delivered", "Topic messages written to streams.", registry=r
        )
        self.delivered_bytes = Counter(
            "unifrost_delivered_bytes", "Bytes of topic messages written to streams.", registry=r
        )
        self.messages_replayed = Counter(
            "unifrost_messages_replayed", "Buffered messages sent on (re)connect.", registry=r
        )
        self.messages_dropped = Counter(
            "unifrost_messages_dropped",
            "Messages lost before delivery, by reason.",
            ["reason"],
            registry=r,
        )
        self.slow_consumer_disconnects = Counter(
            "unifrost_slow_consumer_disconnects",
            "Streams closed because unsent bytes passed max_write_buffer.",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "unifrost_delivery_latency_seconds",
            "Broker receipt to the last socket write of a fan-out.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_up = Gauge("unifrost_broker_up", "1 when the broker is connected.", registry=r)
        self.broker_errors = Counter("unifrost_broker_errors", "Broker errors.", registry=r)
        self.broker_reconnects = Counter(
            "unifrost_broker_reconnects", "Broker reconnections.", registry=r
        )
        self.http_requests = Counter(
            "unifrost_http_requests", "HTTP requests.", ["handler", "code"], registry=r
        )
        self.http_request_duration = Histogram(
            "unifrost_http_request_duration_seconds",
            "HTTP request duration (streams excluded).",
            ["handler"],
            registry=r,
        )
        self.build_info = Info("unifrost_build", "Build information.", registry=r)
        self.build_info.info({"version": __version__})
        # Initialise label values so every series exists from the first scrape.
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for reason in EVICT_REASONS:
            self.consumers_evicted.labels(reason)
        for reason in DROP_REASONS:
            self.messages_dropped.labels(reason)
