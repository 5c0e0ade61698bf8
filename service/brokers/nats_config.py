"""NATS driver configuration: the ``nats://`` URL, its query options, subject rules.

Parsed before the event loop runs; holds no connection state.
:mod:`service.brokers.nats` turns it into a nats-py client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from service.brokers.base import BrokerError
from service.config import parse_duration, parse_size

DEFAULT_PORT = 4222


@dataclass(frozen=True)
class NatsConfig:
    """Everything :meth:`NatsBroker.from_url` parsed; no connection state."""

    scheme: str
    hosts: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    name: str = "unifrost"
    connect_timeout: float = 5.0
    timeout: float = 5.0
    max_reconnect_wait: float = 5.0
    pending_msgs_limit: int = 65536
    pending_bytes_limit: int = 64 * 1024 * 1024

    @property
    def servers(self) -> list[str]:
        return [f"{self.scheme}://{host}" for host in self.hosts]

    @property
    def has_credentials(self) -> bool:
        return self.user is not None or self.token is not None


def parse_url(url: str) -> NatsConfig:
    """Parse a ``nats://``/``tls://`` URL.

    Raises:
        ValueError: the URL is malformed (the message never shows credentials).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("nats", "tls"):
        raise ValueError("expected a nats:// or tls:// URL")
    # Not urlsplit on the whole URL: a netloc holding several servers is no host.
    netloc, _, query = rest.partition("?")
    netloc, _, path = netloc.partition("/")
    if path:
        raise ValueError("a NATS URL takes no path")
    hosts: list[str] = []
    userinfos: set[str] = set()
    for entry in netloc.split(","):
        userinfo, at, hostport = entry.rpartition("@")
        if at:
            userinfos.add(userinfo)
        hosts.append(_host_port(hostport.strip()))
    if len(userinfos) > 1:
        raise ValueError("all servers of a NATS URL must share one set of credentials")
    user, password, token = _credentials(userinfos.pop() if userinfos else "")
    return NatsConfig(scheme, tuple(hosts), user, password, token, **_options(query))


def _host_port(hostport: str) -> str:
    if not hostport:
        raise ValueError("a NATS URL needs a host for every server")
    try:
        parts = urlsplit(f"//{hostport}")
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"invalid NATS server address {hostport!r}") from exc
    host = parts.hostname
    if not host:
        raise ValueError(f"invalid NATS server address {hostport!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _credentials(userinfo: str) -> tuple[str | None, str | None, str | None]:
    """(user, password, token) from ``user:pass`` or ``token`` (percent-decoded)."""
    if not userinfo:
        return None, None, None
    user, colon, password = userinfo.partition(":")
    if colon:
        return unquote(user), unquote(password), None
    return None, None, unquote(user)


def _options(query: str) -> dict[str, Any]:
    parsers: dict[str, Callable[[str], Any]] = {
        "name": str,
        "connect_timeout": _positive_duration,
        "timeout": _positive_duration,
        "max_reconnect_wait": _positive_duration,
        "pending_msgs_limit": _positive_int,
        "pending_bytes_limit": _positive_size,
    }
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in parsers:
            raise ValueError(f"unknown NATS URL option {key!r} (known: {', '.join(parsers)})")
        try:
            options[key] = parsers[key](value)
        except ValueError as exc:
            raise ValueError(f"NATS URL option {key}: {exc}") from exc
    return options


def _positive_duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"must be a positive whole number, got {value!r}")
    return int(value)


def _positive_size(value: str) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f"must be more than zero, got {value!r}")
    return size


def subject_problem(subject: str, *, wildcards: bool) -> str | None:
    """Why ``subject`` is no valid NATS subject (or pattern), or None if it is."""
    if not subject:
        return "a subject must not be empty"
    if any(ch.isspace() for ch in subject):
        return "a subject must not contain whitespace"
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token:
            return "a subject must not have empty tokens (leading, trailing or double '.')"
        if "*" not in token and ">" not in token:
            continue
        if not wildcards:
            return "cannot publish to a subject with a wildcard ('*' or '>')"
        if token not in ("*", ">"):
            return "the wildcards '*' and '>' must be whole tokens"
        if token == ">" and index != len(tokens) - 1:
            return "the wildcard '>' must be the last token"
    return None


def check_subject(subject: str, *, wildcards: bool) -> None:
    problem = subject_problem(subject, wildcards=wildcards)
    if problem:
        raise BrokerError(f"invalid NATS subject {subject!r}: {problem}")
