"""Every log event the service emits: its name, levels, meaning and context fields.

The events themselves are logged where they happen (``log.info("stream.opened",
...)``); this registry describes them for the log reference page
(:mod:`service.reference`), and a test checks it against every call in the
source, so an event cannot be added, renamed or given new fields unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Fields on every line, whatever the event (records of other libraries included).
COMMON_FIELDS: Mapping[str, str] = {
    "timestamp": "When the line was written: ISO 8601 in UTC with microseconds "
    "(`2026-01-02T03:04:05.123456Z`).",
    "level": "`debug`, `info`, `warning` or `error`.",
    "event": "The event name, e.g. `stream.opened`.",
}

#: Added to a line logged together with an exception.
EXCEPTION_FIELD = "exception"


@dataclass(frozen=True)
class LogEvent:
    """One event: ``fields`` are on every line of it, ``optional`` on some."""

    name: str
    levels: tuple[str, ...]
    description: str
    fields: Mapping[str, str] = field(default_factory=dict)
    optional: Mapping[str, str] = field(default_factory=dict)


_BROKER = (
    "The broker URL without credentials (SQS and Pub/Sub keep the options that say where "
    "the broker is: endpoint, region, emulator host)."
)

EVENTS: tuple[LogEvent, ...] = (
    LogEvent(
        "server.started",
        ("info",),
        "The server listens and the broker is connected: ready for traffic.",
        {
            "version": "The running unifrost version.",
            "listen": "The public listener's bound `host:port` (the real port when "
            "`listen` asked for port 0).",
            "admin_listen": "The admin listener's bound `host:port`.",
            "broker": _BROKER,
            "demo": "Whether demo mode is on.",
            "event_loop": "The event loop running the process: `asyncio` or `uvloop`.",
        },
    ),
    LogEvent(
        "server.stopping",
        ("info",),
        "SIGTERM or SIGINT received: `/readyz` answers 503, the listeners stop accepting "
        "and every stream is told `server shutting down`.",
        {"connections": "Streams open when the drain began."},
    ),
    LogEvent(
        "server.drain_timeout",
        ("warning",),
        "Connections were still open after `drain_timeout`; they are cut and the shutdown goes on.",
        {"timeout_s": "The `drain_timeout` that ran out, in seconds."},
    ),
    LogEvent(
        "server.stopped",
        ("info",),
        "The shutdown is complete and the process exits.",
    ),
    LogEvent(
        "consumer.created",
        ("info",),
        "A consumer was created (control API, `auto_create_consumers`, demo page or "
        "embedding application).",
        {"consumer_id": "The new consumer's id."},
    ),
    LogEvent(
        "consumer.evicted",
        ("info",),
        "A consumer was removed, with its subscriptions and buffer.",
        {
            "consumer_id": "The consumer's id.",
            "reason": "`ttl` (no stream for `consumer_ttl`) or `deleted` "
            "(`DELETE /consumers/{id}` or the embedding API).",
        },
    ),
    LogEvent(
        "subscription.changed",
        ("info",),
        "A consumer's topics changed; requests that change nothing are not logged.",
        {
            "consumer_id": "The consumer's id.",
            "added": "Topics subscribed by this change.",
            "removed": "Topics unsubscribed by this change.",
            "subscriptions": "Every topic of the consumer afterwards, sorted.",
        },
    ),
    LogEvent(
        "stream.opened",
        ("info",),
        "A client opened `GET /events` for a consumer.",
        {
            "consumer_id": "The consumer's id.",
            "remote_ip": "The client's address (behind `trusted_proxies`, the forwarded one).",
            "user_agent": "The client's `User-Agent` header (empty when absent).",
            "last_event_id": "The id the client resumed from (`Last-Event-ID` or "
            "`last_event_id=`), `null` without one.",
            "replayed": "Buffered messages sent first.",
        },
    ),
    LogEvent(
        "stream.closed",
        ("info",),
        "A stream ended.",
        {
            "consumer_id": "The consumer's id.",
            "duration_s": "How long the stream was open, in seconds.",
            "messages": "Topic messages sent on it, replayed ones included.",
            "bytes": "Bytes of those messages' frames, `id:` lines included.",
            "reason": "`client`, `replaced`, `consumer_closed`, `slow_reader`, `shutdown` "
            "or `error` (as the `reason` label of `unifrost_connections_closed_total`).",
        },
    ),
    LogEvent(
        "http.request",
        ("info",),
        "A control-API request (`/consumers...`, `/publish`) was answered, or any request "
        "failed with a 5xx status. Scrapes of `/metrics` and health checks are not logged; "
        "streams are logged as `stream.*`.",
        {
            "method": "The HTTP method.",
            "path": "The request path, without the query string.",
            "status": "The response status code.",
            "duration_ms": "Time to answer, in milliseconds.",
            "remote_ip": "The client's address (behind `trusted_proxies`, the forwarded one).",
        },
    ),
    LogEvent(
        "broker.connected",
        ("info",),
        "The broker connection is up: at startup, or after an outage once every "
        "subscription was restored.",
        {"broker": _BROKER, "reconnected": "`true` when this ends an outage."},
    ),
    LogEvent(
        "broker.disconnected",
        ("warning",),
        "The broker connection was lost: streams get `broker-unavailable`, `/readyz` "
        "answers 503, and the driver reconnects with backoff.",
        {"broker": _BROKER, "reason": "What went wrong, without credentials."},
    ),
    LogEvent(
        "broker.error",
        ("warning", "error"),
        "A broker operation failed without taking the connection down: a subscription "
        "refused or killed by the broker (its consumers get `subscription-failure`), a "
        "failed reconnect attempt, a failed unsubscribe or close, an entry that cannot "
        "be delivered. `error` level when our own code raised (with `exception`).",
        optional={
            "topic": "The topic concerned, when there is one.",
            "broker": _BROKER,
            "op": "The operation that failed, e.g. `unsubscribe`, `unbind`, `close`.",
            "error": "What went wrong, without credentials.",
            EXCEPTION_FIELD: "The traceback, for `error` level lines.",
        },
    ),
    LogEvent(
        "broker.messages_dropped",
        ("warning",),
        "The broker client library lost messages of a topic (e.g. a NATS slow-consumer "
        "limit); the topic's streams get a `messages-dropped` error frame.",
        {
            "topic": "The topic.",
            "count": "How many messages were lost.",
            "reason": "The library's explanation.",
        },
    ),
    LogEvent(
        "broker.partitions_changed",
        ("info",),
        "Kafka: a subscribed topic appeared or its partitions changed, or a partition "
        "was recreated and is read again from its beginning.",
        {
            "topic": "The topic.",
            "partitions": "Its partitions now.",
            "before": "Its partitions before (empty: the topic did not exist).",
            "restarted": "Partitions read again from their beginning.",
        },
    ),
    LogEvent(
        "demo.publish_failed",
        ("warning",),
        "Demo mode: the demo publisher could not publish (e.g. during a broker outage).",
        {"topic": "The demo topic.", "error": "What went wrong."},
    ),
)

BY_NAME: Mapping[str, LogEvent] = {event.name: event for event in EVENTS}
