"""A JSON body nested deeper than the parser's recursion allows is a 400
``bad-json`` on every route that reads JSON, never a 500."""

from __future__ import annotations

import pytest

from service.config import ClientSubscriptionSettings
from tests.support import Running, assert_json_error, running_server

DEEP = b"[" * 100_000  # well inside the 256 KiB JSON body limit


@pytest.mark.parametrize("path", ["/consumers", "/consumers/c1/subscriptions"])
async def test_deeply_nested_json_is_400_on_the_admin_listener(server: Running, path: str) -> None:
    await server.create_consumer(id="c1")
    assert_json_error(await server.api("POST", path, DEEP), 400, "bad-json")
    assert len(server.manager) == 1


async def test_deeply_nested_json_is_400_on_client_subscriptions() -> None:
    enabled = ClientSubscriptionSettings(enabled=True, allow=("*",))
    async with running_server(client_subscriptions=enabled) as running:
        response = await running.public_api("POST", "/subscriptions", DEEP)
        assert_json_error(response, 400, "bad-json")
