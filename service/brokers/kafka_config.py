"""Kafka driver configuration: the ``kafka://`` URL, ``kafka.*`` settings, topic names.

Everything here is parsed before the event loop runs and holds nothing live;
:mod:`service.brokers.kafka` turns it into aiokafka clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

from service.brokers.base import BrokerError, redact_url
from service.config import KafkaSettings, Settings

DEFAULT_PORT = 9092
MAX_TOPIC_LENGTH = 249
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS = ("SSL", "SASL_SSL")


def topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse ``topic`` as a topic name, or None if it is valid."""
    if not topic:
        return "a Kafka topic name must not be empty"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"a Kafka topic name has at most {MAX_TOPIC_LENGTH} characters (got {len(topic)})"
    if topic in (".", ".."):
        return f"{topic!r} is not a valid Kafka topic name"
    if not _LEGAL_TOPIC.fullmatch(topic):
        bad = sorted({c for c in topic if not _LEGAL_TOPIC.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad[:5])
        return (
            f"invalid Kafka topic name: {shown} not allowed "
            "(use letters, digits, '.', '_' and '-'; Kafka has no wildcards)"
        )
    return None


# --- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class KafkaOptions:
    """What ``from_url`` parsed: everything ``connect`` needs, nothing live."""

    bootstrap: tuple[str, ...]
    kafka: KafkaSettings
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    max_message_bytes: int = 1048576

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> KafkaOptions:
        """Parse ``url`` and the ``kafka.*`` settings.

        Raises:
            ValueError: the URL or the settings are unusable (never shows a password).
        """
        servers, user, password = _parse_url(url)
        kafka = settings.kafka
        if kafka.sasl_username:  # explicit keys win over URL credentials
            user, password = kafka.sasl_username, kafka.sasl_password
        options = cls(servers, kafka, user, password, settings.max_message_bytes)
        _check_security(options)
        return options


def _parse_url(url: str) -> tuple[tuple[str, ...], str | None, str | None]:
    """``(bootstrap servers, user, password)`` from a ``kafka://`` URL."""
    shown = _redacted(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"invalid kafka:// URL (use kafka://host:port,...): {shown}") from None
    if parts.scheme.lower() != "kafka":
        raise ValueError(f"not a kafka:// URL: {shown}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a kafka:// URL has no path or query (kafka://host:port,...): {shown}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    servers = tuple(_parse_server(item, shown) for item in hosts.split(","))
    if not at:
        return servers, None, None
    return servers, unquote(user) or None, unquote(password) or None


def _redacted(url: str) -> str:
    try:
        return redact_url(url)
    except ValueError:  # unparseable: cut any credentials by hand
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def _parse_server(item: str, shown: str) -> str:
    text = item.strip()
    if text.startswith("["):  # [v6]:port
        host, close, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "?")
        host_ok = bool(close and host)
    else:
        host, _, port = text.partition(":")
        host_ok = bool(host) and ":" not in port and not any(c.isspace() for c in host)
    if not host_ok:
        raise ValueError(f"invalid Kafka bootstrap server {text!r} (use host:port): {shown}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"invalid port in Kafka bootstrap server {text!r}: {shown}")
    shown_host = f"[{host}]" if text.startswith("[") else host
    return f"{shown_host}:{port or DEFAULT_PORT}"


def _check_security(options: KafkaOptions) -> None:
    """Refuse settings that would be silently ignored or fail on every connect."""
    kafka = options.kafka
    protocol = kafka.security_protocol
    if protocol in _SASL and not (options.username and options.password):
        raise ValueError(
            f"kafka.security_protocol {protocol} needs kafka.sasl_username and "
            "kafka.sasl_password (or user:password@ in the broker URL)"
        )
    if protocol not in _SASL and (kafka.sasl_username or kafka.sasl_password or options.username):
        raise ValueError(
            f"SASL credentials are set but kafka.security_protocol {protocol} does not use "
            "them (use SASL_PLAINTEXT or SASL_SSL)"
        )
    tls_files = [
        f"kafka.{name}"
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if getattr(kafka, name)
    ]
    if protocol not in _TLS and tls_files:
        raise ValueError(
            f"{', '.join(tls_files)} set but kafka.security_protocol {protocol} does not use "
            "TLS (use SSL or SASL_SSL)"
        )
    if kafka.ssl_keyfile and not kafka.ssl_certfile:
        raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile")


def client_options(options: KafkaOptions) -> dict[str, Any]:
    """Connection keyword arguments shared by aiokafka's producer, consumer and client."""
    kafka = options.kafka
    common: dict[str, Any] = {
        "bootstrap_servers": list(options.bootstrap),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in _SASL:
        common.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=options.username,
            sasl_plain_password=options.password,
        )
    if kafka.security_protocol in _TLS:
        try:
            common["ssl_context"] = create_ssl_context(
                cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
            )
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot load the Kafka TLS files: {exc}") from None
    return common
