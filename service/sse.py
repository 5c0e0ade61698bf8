"""Server-Sent Events frame encoding for the unifrost wire protocol.

Pure functions, bytes out. Topic frames are encoded once per broker message and
shared by every consumer: only the ``id:`` line differs per consumer, so it is
kept separate (see :func:`id_line`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

INFO_TOPIC = "/unifrost/info"
ERROR_TOPIC = "/unifrost/error"
CLOSED_TOPIC = "/unifrost/closed"

HEARTBEAT = b":\n\n"

# Error frame codes (SPEC "Error frame").
SUBSCRIPTION_FAILURE = "subscription-failure"
BROKER_UNAVAILABLE = "broker-unavailable"
BROKER_RECOVERED = "broker-recovered"
MESSAGES_DROPPED = "messages-dropped"
RESUME_GAP = "resume-gap"

# Closed frame reasons.
CLOSED_BY_DELETE = "consumer closed"
CLOSED_REPLACED = "replaced"
CLOSED_SHUTDOWN = "server shutting down"


def _dumps(value: Any) -> str:
    # Compact, non-ASCII kept as is (as json.dumps(ensure_ascii=False, separators=
    # (",", ":")) writes it); every control character is escaped, so a payload can
    # never break an SSE line.
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # lone surrogates (from a JSON body's "\ud800"), huge integers
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def message_frame(event: str, topic: str, payload: str) -> bytes:
    """One ``event:``/``data:`` block without its ``id:`` line."""
    return f"event: {event}\ndata: {_dumps([topic, payload])}\n\n".encode()


def topic_frame(topic: str, body: bytes, event_name: str) -> bytes:
    """Encode a broker message for every consumer of ``topic``.

    ``event_name`` is ``"message"`` (unifrost's encoding) or ``"topic"`` (the
    event type is the topic itself).
    """
    payload = body.decode("utf-8", errors="replace")
    return message_frame(topic if event_name == "topic" else "message", topic, payload)


def id_line(event_id: int) -> bytes:
    return b"id: %d\n" % event_id


def retry_frame(millis: int) -> bytes:
    return b"retry: %d\n\n" % millis


def info_frame(config: dict[str, Any], subscriptions: list[str]) -> bytes:
    inner = _dumps({"config": config, "subscriptions": sorted(subscriptions)})
    return message_frame("message", INFO_TOPIC, inner)


def error_frame(code: str, message: str, topic: str | None = None, **extra: Any) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "topic": topic, **extra}
    return message_frame("message", ERROR_TOPIC, _dumps({"error": error}))


def closed_frame(reason: str) -> bytes:
    return message_frame("message", CLOSED_TOPIC, reason)
