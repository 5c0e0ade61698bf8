"""A method a route does not support is a JSON 405 whose ``Allow`` header lists
the methods it does support (RFC 9110), on both listeners."""

from __future__ import annotations

import pytest

from service.config import ClientSubscriptionSettings
from tests.support import Running, assert_json_error, running_server


def allowed(response_headers: dict[str, str]) -> set[str]:
    return {method.strip() for method in response_headers["allow"].split(",")}


@pytest.mark.parametrize(
    ("method", "path", "methods"),
    [
        ("PUT", "/consumers", {"GET", "POST"}),
        ("TRACE", "/consumers", {"GET", "POST"}),
        ("PATCH", "/consumers/x", {"GET", "DELETE"}),
        ("GET", "/consumers/x/subscriptions", {"POST"}),
        ("GET", "/publish?topic=t", {"POST"}),
        ("DELETE", "/metrics", {"GET"}),
        ("POST", "/healthz", {"GET"}),
        ("BREW", "/readyz", {"GET"}),
    ],
)
async def test_admin_405_lists_allowed_methods(
    server: Running, method: str, path: str, methods: set[str]
) -> None:
    await server.create_consumer(id="x")
    response = await server.api(method, path)
    assert_json_error(response, 405, "method-not-allowed")
    assert allowed(response.headers) == methods


async def test_public_405_lists_allowed_methods() -> None:
    enabled = ClientSubscriptionSettings(enabled=True, allow=("*",))
    async with running_server(client_subscriptions=enabled) as running:
        for method, path, methods in [
            ("POST", "/events", {"GET", "OPTIONS"}),
            ("DELETE", "/subscriptions", {"POST", "OPTIONS"}),
            ("POST", "/unifrost.js", {"GET", "HEAD"}),
            ("TRACE", "/healthz", {"GET"}),
        ]:
            response = await running.public_api(method, path)
            assert_json_error(response, 405, "method-not-allowed")
            assert allowed(response.headers) == methods, (method, path)


async def test_405_with_a_token_set_comes_after_the_token_check() -> None:
    async with running_server(admin_token="s3cret") as running:
        refused = await running.api("PUT", "/consumers")
        assert_json_error(refused, 401, "unauthorized")
        response = await running.api(
            "PUT", "/consumers", headers={"Authorization": "Bearer s3cret"}
        )
        assert_json_error(response, 405, "method-not-allowed")
        assert allowed(response.headers) == {"GET", "POST"}
