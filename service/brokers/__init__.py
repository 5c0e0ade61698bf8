"""Broker drivers, chosen by URL scheme (SPEC "Broker URLs")."""

from __future__ import annotations

from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.memory import MemoryBroker

__all__ = ["Broker", "BrokerError", "BrokerUnavailable", "MemoryBroker", "open_broker"]

SUPPORTED_SCHEMES = ("memory",)


def open_broker(url: str) -> Broker:
    """Build the driver for ``url`` (not yet connected).

    Raises:
        ValueError: the scheme is unknown or not yet supported.
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryBroker.from_url(url)
    raise ValueError(
        f"unsupported broker scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})"
    )
