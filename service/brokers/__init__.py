"""Broker drivers, chosen by URL scheme (SPEC "Broker URLs").

Drivers for external brokers are imported only when their scheme is used, so
their client libraries stay optional extras (``pip install unifrost[kafka]``).
"""

from __future__ import annotations

import importlib

from service.brokers.base import Broker, BrokerError, BrokerUnavailable, redact_url
from service.brokers.memory import MemoryBroker
from service.config import Settings

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "MemoryBroker",
    "open_broker",
    "redact_url",
]

# scheme -> (module, class, pip extra)
_DRIVERS: dict[str, tuple[str, str, str]] = {
    "kafka": ("service.brokers.kafka", "KafkaBroker", "kafka"),
    "amqp": ("service.brokers.rabbitmq", "RabbitMQBroker", "rabbitmq"),
    "amqps": ("service.brokers.rabbitmq", "RabbitMQBroker", "rabbitmq"),
    "nats": ("service.brokers.nats", "NatsBroker", "nats"),
    "tls": ("service.brokers.nats", "NatsBroker", "nats"),
    "redis": ("service.brokers.redis_pubsub", "RedisBroker", "redis"),
    "rediss": ("service.brokers.redis_pubsub", "RedisBroker", "redis"),
    "sqs": ("service.brokers.sqs", "SqsBroker", "sqs"),
    "gcppubsub": ("service.brokers.gcppubsub", "GcpPubSubBroker", "gcppubsub"),
    "mqtt": ("service.brokers.mqtt", "MqttBroker", "mqtt"),
    "mqtts": ("service.brokers.mqtt", "MqttBroker", "mqtt"),
}

SUPPORTED_SCHEMES = ("memory", *_DRIVERS)


def open_broker(url: str, settings: Settings | None = None) -> Broker:
    """Build the driver for ``url`` (not yet connected).

    Raises:
        ValueError: the scheme is unknown, or its driver or client library is
            not installed.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryBroker.from_url(url)
    if scheme not in _DRIVERS:
        raise ValueError(
            f"unsupported broker scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})"
        )
    module_name, class_name, extra = _DRIVERS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"the {scheme}:// driver needs `pip install unifrost[{extra}]` ({exc})"
        ) from exc
    driver: type[Broker] = getattr(module, class_name)
    return driver.from_url(url, settings or Settings())
