"""Every Prometheus metric the service exports, on an injected registry.

No label ever takes a consumer id or a topic name (unbounded cardinality).
Fan-out counters are bumped once per broker message, with the delivery count as
the increment, never once per delivery. The metrics counted per message, per
request, per stream and per consumer are :mod:`service.tally`'s lock-free ones;
the broker's few are prometheus_client's own.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
)

from service import __version__
from service.tally import TallyCounter, TallyGauge, TallyHistogram

CLOSE_REASONS = ("client", "replaced", "consumer_closed", "slow_reader", "shutdown")
EVICT_REASONS = ("ttl", "deleted")
DROP_REASONS = ("buffer_full", "broker")

# `*_created` series double the exposition and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# What each metric means beyond its one-line help, by the name given to its
# constructor; rendered on the metrics reference page (service/reference.py).
DETAILS: dict[str, str] = {
    "unifrost_connections": """Streams (`GET /events` connections) open on this process now.
        Consumers without a stream are not counted: they wait for their client to come
        back within `consumer_ttl`.""",
    "unifrost_connections_opened": """Streams opened since the process started. Its rate next to
        that of `unifrost_consumers_created_total` shows how often clients reconnect; many
        reconnects often mean a proxy that cuts idle connections sooner than `heartbeat`.""",
    "unifrost_connections_closed": """Streams closed since the process started. `reason`:
        `client` (the client went away: page closed, network cut, proxy timeout),
        `replaced` (a newer stream of the same consumer took over), `consumer_closed`
        (the consumer was deleted), `slow_reader` (unsent bytes passed
        `max_write_buffer`), `shutdown` (the server drained).""",
    "unifrost_stream_duration_seconds": """How long each stream stayed open, observed when it
        closes. Many short streams closed by `client` point at a proxy or load balancer
        cutting long-lived connections.""",
    "unifrost_consumers": """Consumers this process holds, with or without an open stream;
        bounded by `limits.max_consumers`.""",
    "unifrost_consumers_created": """Consumers created: by `POST /consumers`, by `GET /events`
        with `auto_create_consumers`, by the demo page or by an embedding application.""",
    "unifrost_consumers_evicted": """Consumers removed. `reason`: `ttl` (no stream for
        `consumer_ttl`), `deleted` (`DELETE /consumers/{id}`, or closed by an embedding
        application).""",
    "unifrost_subscriptions": """Consumer-topic pairs: a consumer subscribed to three topics
        counts three. Bounded per consumer by `limits.max_subscriptions_per_consumer`.""",
    "unifrost_broker_subscriptions": """Topics this process holds a broker subscription for:
        one per topic however many consumers share it, released when the last one
        leaves.""",
    "unifrost_messages_received": """Messages the broker driver handed over, counted once each
        before fan-out, even when no consumer of the topic is left to receive them.""",
    "unifrost_messages_delivered": """Topic message frames written to open streams: a message
        read by N streams counts N. Frames sent from the buffer when a stream opens are
        counted in `unifrost_messages_replayed_total` instead.""",
    "unifrost_delivered_bytes": """Bytes of the frames counted by
        `unifrost_messages_delivered_total`, `id:` line included; SSE framing overhead is
        part of it, HTTP and TLS overhead is not.""",
    "unifrost_messages_replayed": """Buffered frames sent when a stream opens: messages the
        consumer received while it had no stream, or after the `Last-Event-ID` the client
        resumed from.""",
    "unifrost_messages_dropped": """Messages that never reached a stream. `reason`:
        `buffer_full` (pushed out of a consumer's buffer by `buffer.max_messages` or
        `buffer.max_bytes` before any stream got it, counted per consumer), `broker` (lost
        by the broker client library, e.g. a NATS slow-consumer limit; the topic's streams
        get a `messages-dropped` error frame).""",
    "unifrost_slow_consumer_disconnects": """Streams closed because their client did not read
        fast enough; also counted as `unifrost_connections_closed_total{reason="slow_reader"}`.
        The consumer stays and resumes from its buffer when the client reconnects.""",
    "unifrost_delivery_latency_seconds": """Time from a broker message's arrival to the last
        socket write of its fan-out, observed once per message that reached at least one
        stream. It grows with the number of streams per topic and with CPU saturation;
        it does not include the broker's own latency.""",
    "unifrost_broker_up": """1 while the broker connection is up, 0 during an outage (then
        `/readyz` answers 503, `POST /publish` answers 503 and open streams got a
        `broker-unavailable` error frame).""",
    "unifrost_broker_errors": """Broker errors: subscriptions the broker refused or killed,
        failed reconnect attempts and other driver errors; each is also logged as
        `broker.error`.""",
    "unifrost_broker_reconnects": """Recoveries from a broker outage: the connection came back
        and every subscription was restored (streams got `broker-recovered`).""",
    "unifrost_http_requests": """HTTP requests answered, by route (`handler`) and status
        (`code`). A stream counts once, with code 200, when it opens.""",
    "unifrost_http_request_duration_seconds": """Time to answer each HTTP request, by route;
        streams are not observed (see `unifrost_stream_duration_seconds`).""",
    "unifrost_build": """Always 1; the `version` label carries the running version, e.g.
        to follow a rolling upgrade.""",
}

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The metric families, created on ``registry`` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = TallyGauge("unifrost_connections", "Open SSE streams.", registry=r)
        self.connections_opened = TallyCounter(
            "unifrost_connections_opened", "SSE streams opened.", registry=r
        )
        self.connections_closed = TallyCounter(
            "unifrost_connections_closed", "SSE streams closed, by reason.", ["reason"], registry=r
        )
        self.stream_duration = TallyHistogram(
            "unifrost_stream_duration_seconds",
            "How long SSE streams stayed open.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.consumers = TallyGauge("unifrost_consumers", "Live consumers.", registry=r)
        self.consumers_created = TallyCounter(
            "unifrost_consumers_created", "Consumers created.", registry=r
        )
        self.consumers_evicted = TallyCounter(
            "unifrost_consumers_evicted", "Consumers removed, by reason.", ["reason"], registry=r
        )
        self.subscriptions = TallyGauge(
            "unifrost_subscriptions", "Consumer-topic subscriptions.", registry=r
        )
        self.broker_subscriptions = Gauge(
            "unifrost_broker_subscriptions",
            "Broker subscriptions held (one per topic).",
            registry=r,
        )
        self.messages_received = TallyCounter(
            "unifrost_messages_received", "Messages received from the broker.", registry=r
        )
        self.messages_delivered = TallyCounter(
            "unifrost_messages_delivered", "Topic messages written to streams.", registry=r
        )
        self.delivered_bytes = TallyCounter(
            "unifrost_delivered_bytes", "Bytes of topic messages written to streams.", registry=r
        )
        self.messages_replayed = TallyCounter(
            "unifrost_messages_replayed", "Buffered messages sent on (re)connect.", registry=r
        )
        self.messages_dropped = TallyCounter(
            "unifrost_messages_dropped",
            "Messages lost before delivery, by reason.",
            ["reason"],
            registry=r,
        )
        self.slow_consumer_disconnects = TallyCounter(
            "unifrost_slow_consumer_disconnects",
            "Streams closed because unsent bytes passed max_write_buffer.",
            registry=r,
        )
        self.delivery_latency = TallyHistogram(
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
        self.http_requests = TallyCounter(
            "unifrost_http_requests", "HTTP requests.", ["handler", "code"], registry=r
        )
        self.http_request_duration = TallyHistogram(
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
        self._request_counts: dict[tuple[str, int], Any] = {}
        self._request_durations: dict[str, Any] = {}

    def count_request(self, handler: str, status: int, seconds: float | None = None) -> None:
        """One answered request: ``http_requests_total`` and, unless None, its duration.

        Publishes and stream openings come thousands a second; their labelled
        series are looked up once, not per request.
        """
        count = self._request_counts.get((handler, status))
        if count is None:
            count = self._request_counts[(handler, status)] = self.http_requests.labels(
                handler, str(status)
            )
        count.inc()
        if seconds is not None:
            duration = self._request_durations.get(handler)
            if duration is None:
                duration = self._request_durations[handler] = self.http_request_duration.labels(
                    handler
                )
            duration.observe(seconds)
