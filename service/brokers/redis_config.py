"""Redis URLs (parsing, options) and the connection helpers both Redis drivers share.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``; ``rediss://``
is the same over TLS (verified against the system's CAs). The port defaults to
6379. ``user`` is an ACL user (Redis 6+); ``:password@`` alone authenticates as
the default user. Credentials are percent-decoded and handed to redis-py as
connection arguments, never put in messages. Options (all optional):

``connect_timeout``
    seconds; bound on connecting and on each reconnect attempt (default 5).
``timeout``
    seconds; bound on the server's reply to a command (default 5).
``max_reconnect_wait``
    seconds; cap of the jittered exponential reconnect delay (default 5).
``health_check_interval``
    seconds (default 10); how long a reading connection may stay silent: the
    pub/sub connection is sent ``PING`` after that much silence, and a streams
    ``XREAD`` blocks at most that long. One that died without a reset is so
    found within ``health_check_interval + timeout``.
``streams``
    ``1`` (or ``true``) reads and writes Redis Streams instead of pub/sub
    (:mod:`service.brokers.redis_streams`); ``0`` (or ``false``, the default)
    keeps pub/sub (:mod:`service.brokers.redis_pubsub`).
``maxlen``
    streams only; a publish trims its stream to about this many entries
    (``MAXLEN ~``; default 10000, ``0`` never trims).
``start``
    streams only; where the process starts reading a topic it subscribes:
    ``$`` (the default) for entries added from then on, or a stream id
    (``<ms>`` or ``<ms>-<seq>``) for every retained entry after it, so ``0``
    replays the stream's whole retained history first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.brokers.base import redact_url

GLOB_CHARACTERS = frozenset("*?[")
_SECONDS = ("connect_timeout", "timeout", "max_reconnect_wait", "health_check_interval")
_STREAMS_ONLY = ("maxlen", "start")
_OPTIONS = (*_SECONDS, "streams", *_STREAMS_ONLY)
_FLAGS = {"1": True, "true": True, "0": False, "false": False}
_STREAM_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_ID_PART_MAX = 2**64 - 1

StreamId = tuple[int, int]
"""A stream entry id ``<ms>-<seq>`` as a pair, so ids compare in stream order."""


@dataclass(frozen=True)
class RedisConfig:
    """What a ``redis://`` URL says."""

    url: str
    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    connect_timeout: float = 5.0
    timeout: float = 5.0
    max_reconnect_wait: float = 5.0
    health_check_interval: float = 10.0
    streams: bool = False
    maxlen: int = 10_000
    #: None: start at the stream's end when subscribing (``$``).
    start: StreamId | None = None


def parse_url(url: str) -> RedisConfig:
    """Parse a ``redis://`` or ``rediss://`` URL.

    Raises:
        ValueError: the URL is malformed (the message never holds credentials).
    """
    safe = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {safe!r}")
    try:
        host, port = parts.hostname, parts.port or 6379
    except ValueError:
        raise ValueError(f"invalid Redis URL {safe!r}: bad port") from None
    if not host:
        raise ValueError(f"invalid Redis URL {safe!r}: it needs a host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"invalid Redis URL {safe!r}: the path must be a database number")
    options = _parse_options(parse_qsl(parts.query, keep_blank_values=True))
    return RedisConfig(
        url=url,
        tls=parts.scheme == "rediss",
        host=host,
        port=port,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        **options,
    )


def _parse_options(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in pairs:
        if name not in _OPTIONS:
            raise ValueError(f"unknown Redis URL option {name!r} (known: {', '.join(_OPTIONS)})")
        if name in _SECONDS:
            options[name] = _seconds(name, value)
        elif name == "streams":
            if value.lower() not in _FLAGS:
                raise ValueError(f"Redis URL option streams: must be 1 or 0, not {value!r}")
            options[name] = _FLAGS[value.lower()]
        elif name == "maxlen":
            if not value.isdigit():
                raise ValueError(
                    f"Redis URL option maxlen: must be a whole number of entries"
                    f" (0: never trim), not {value!r}"
                )
            options[name] = int(value)
        else:
            options[name] = (
                None if value == "$" else parse_stream_id(value, "Redis URL option start")
            )
    for name in _STREAMS_ONLY:
        if name in options and not options.get("streams"):
            raise ValueError(f"Redis URL option {name}: applies only with streams=1")
    return options


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"Redis URL option {name}: must be more than zero seconds")
    return seconds


def parse_stream_id(value: str | bytes, what: str = "stream id") -> StreamId:
    """``<ms>-<seq>`` (or ``<ms>``, meaning ``<ms>-0``) as a comparable pair.

    Raises:
        ValueError: ``value`` is not a stream id.
    """
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"{what}: must be $ or a stream id <ms>[-<seq>], not {text!r}")
    stream_id = (int(match.group(1)), int(match.group(2) or 0))
    if max(stream_id) > _ID_PART_MAX:
        raise ValueError(f"{what}: {text!r} is past the largest stream id")
    return stream_id


def format_stream_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def is_pattern(topic: str) -> bool:
    """True when ``topic`` is a glob pattern (a ``PSUBSCRIBE`` in pub/sub mode)."""
    return not GLOB_CHARACTERS.isdisjoint(topic)


def connection_args(config: RedisConfig, socket_timeout: float | None) -> dict[str, Any]:
    """redis-py connection arguments for ``config`` (credentials included)."""
    return {
        "host": config.host,
        "port": config.port,
        "db": config.db,
        "username": config.username,
        "password": config.password,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        "socket_keepalive": True,
        "protocol": 2,  # replies as plain arrays, parsed by the drivers themselves
        "retry": Retry(NoBackoff(), 0),  # outages are handled by the drivers, not retried inside
    }


def error_text(config: RedisConfig, exc: BaseException) -> str:
    """``exc`` as text without any credential (they should never be in it anyway)."""
    text = str(exc) or type(exc).__name__
    if config.password:
        text = text.replace(config.password, "***")
    return text


def describe(config: RedisConfig) -> str:
    """The URL without credentials and options, for logs."""
    return redact_url(config.url.split("?", 1)[0])


async def stop_task(task: asyncio.Task[Any], timeout: float) -> None:
    """Cancel ``task`` and wait for its end, at most ``timeout`` seconds.

    The cancel is repeated while the task runs on: on Python 3.11 a cancel that
    lands just as an inner ``asyncio.wait_for`` completes is lost, and redis-py
    sends every command through one.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(remaining, 0.05))
    with contextlib.suppress(BaseException):
        task.exception()  # retrieved: its end was wanted
