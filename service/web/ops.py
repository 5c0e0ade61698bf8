"""Operational routes: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.web.base import AdminHandler, BaseHandler


class HealthHandler(BaseHandler):
    """Liveness: the process is up and its IOLoop answers."""

    name = "healthz"

    def get(self) -> None:
        self.send_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    """Readiness: the broker is connected and the server is not draining."""

    name = "readyz"

    def get(self) -> None:
        broker_up = self.ctx.broker.is_up
        draining = self.ctx.state.draining
        ready = broker_up and not draining
        self.send_json(
            {
                "status": "ready" if ready else "unavailable",
                "broker": "up" if broker_up else "down",
                "draining": draining,
            },
            status=200 if ready else 503,
        )


class MetricsHandler(AdminHandler):
    """Prometheus text exposition of the injected registry."""

    name = "metrics"
    log_requests = False

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.ctx.metrics.registry))


health_handlers: list[tuple[str, Any]] = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]
