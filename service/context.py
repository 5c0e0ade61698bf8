"""The objects a running server shares with its handlers (passed via ``initialize``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.brokers.base import Broker
from service.config import Settings
from service.consumers.hub import TopicHub
from service.consumers.manager import ConsumerManager
from service.metrics import Metrics


@dataclass
class ServerState:
    """Mutable run state: ``draining`` turns ``/readyz`` to 503 during shutdown."""

    draining: bool = False
    #: The bound admin port (the demo page shows it in its publish command).
    admin_port: int = 0


@dataclass
class AppContext:
    settings: Settings
    broker: Broker
    hub: TopicHub
    manager: ConsumerManager
    metrics: Metrics
    state: ServerState = field(default_factory=ServerState)
