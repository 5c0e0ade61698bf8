"""What a ``gcppubsub://`` URL says, and the Pub/Sub resource names the driver uses.

Pub/Sub names topics and subscriptions ``projects/<project>/topics/<id>`` and
``projects/<project>/subscriptions/<id>``; an id is 3-255 characters of
``A-Z a-z 0-9 - _ . ~ + %``, starts with a letter and does not start with
``goog``. This module checks topic ids and builds each subscription's id from
the instance that owns it, so an operator can tell whose subscription it is.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from service.brokers.base import BrokerError

EMULATOR_VARIABLE = "PUBSUB_EMULATOR_HOST"
_OPTIONS = (
    "emulator_host",
    "ack_deadline_seconds",
    "expiration_days",
    "max_messages",
    "timeout",
    "max_reconnect_wait",
)
# A project id (6-30 characters), optionally behind a legacy "domain.com:" prefix.
_PROJECT = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_WILDCARDS = frozenset("*?[]>#")
_MAX_ID = 255


@dataclass(frozen=True)
class PubSubConfig:
    """The driver's settings; ``emulator_host`` also comes from ``PUBSUB_EMULATOR_HOST``."""

    project: str
    emulator_host: str | None = None
    ack_deadline_seconds: int = 10
    expiration_days: int = 1
    max_messages: int = 500
    timeout: float = 10.0
    max_reconnect_wait: float = 5.0

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription_id: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription_id}"


def parse_url(url: str) -> PubSubConfig:
    """Parse a ``gcppubsub://<project-id>[?options]`` URL.

    Raises:
        ValueError: the URL is malformed. Google credentials never travel in
            the URL, and the message never repeats what was there instead.
    """
    parts = urlsplit(url)
    if parts.scheme != "gcppubsub":
        raise ValueError(f"not a gcppubsub:// URL: {parts.scheme}://")
    if "@" in parts.netloc:
        raise ValueError(
            "a gcppubsub:// URL takes no credentials: use Google's standard ones"
            " (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server)"
        )
    project = parts.netloc
    if not _PROJECT.fullmatch(project):
        raise ValueError(
            f"invalid gcppubsub:// URL: {project!r} is not a Google Cloud project id"
            " (6-30 characters of a-z 0-9 -, starting with a letter)"
        )
    if parts.path not in ("", "/"):
        raise ValueError("invalid gcppubsub:// URL: it takes no path (topics are named per call)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in options:
        if name not in _OPTIONS:
            raise ValueError(
                f"unknown gcppubsub URL option {name!r} (known: {', '.join(_OPTIONS)})"
            )
    emulator = options.get("emulator_host") or os.environ.get(EMULATOR_VARIABLE) or None
    if emulator is not None and not re.fullmatch(r"[^\s/@]+:\d+", emulator):
        raise ValueError(f"option emulator_host: {emulator!r} is not host:port")
    return PubSubConfig(
        project=project,
        emulator_host=emulator,
        ack_deadline_seconds=_integer(options, "ack_deadline_seconds", 10, 10, 600),
        expiration_days=_integer(options, "expiration_days", 1, 1, 31),
        max_messages=_integer(options, "max_messages", 500, 1, 1000),
        timeout=_seconds(options, "timeout", 10.0),
        max_reconnect_wait=_seconds(options, "max_reconnect_wait", 5.0),
    )


def _integer(options: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"option {name}: must be a whole number from {low} to {high}")
    return int(raw)


def _seconds(options: dict[str, str], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"option {name}: must be more than zero seconds")
    return value


def check_topic(topic: str) -> None:
    """Refuse what cannot be a Pub/Sub topic id.

    Raises:
        BrokerError: a wildcard, or not a valid topic id.
    """
    if not _WILDCARDS.isdisjoint(topic):
        raise BrokerError(
            f"Pub/Sub has no wildcard subscriptions: {topic!r} must be one exact topic name"
        )
    if not _RESOURCE_ID.fullmatch(topic) or topic.lower().startswith("goog"):
        raise BrokerError(
            f"invalid Pub/Sub topic name {topic!r}: 3-255 characters of A-Z a-z 0-9 - _ . ~ + %,"
            " starting with a letter, not with 'goog'"
        )


class SubscriptionNames:
    """Subscription ids that say which instance owns them.

    ``unifrost-<hostname>-<pid>-<random>-<n>-<topic>``: hostname and process id
    name the instance, the random part tells apart drivers of one process (and
    a restarted process that got the same pid), and ``n`` counts the driver's
    subscriptions, so none is ever reused. A topic too long to fit is cut and
    followed by a hash of its full name.
    """

    def __init__(self) -> None:
        host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:40] or "host"
        self.instance = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        self._counter = itertools.count(1)

    @property
    def prefix(self) -> str:
        """What every subscription id of this instance starts with."""
        return f"unifrost-{self.instance}-"

    def next_id(self, topic: str) -> str:
        head = f"{self.prefix}{next(self._counter)}-"
        if len(head) + len(topic) <= _MAX_ID:
            return head + topic
        digest = hashlib.sha256(topic.encode()).hexdigest()[:16]
        return f"{head}{topic[: _MAX_ID - len(head) - len(digest) - 1]}-{digest}"
