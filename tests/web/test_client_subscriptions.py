"""``POST /subscriptions`` on the public listener: browsers changing their own topics.

Off by default; when enabled, only topics matching ``client_subscriptions.allow``
may be added. Same response shape as the control route; CORS for allowed origins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.config import ClientSubscriptionSettings
from tests.support import Response, Running, assert_json_error, running_server

ORIGIN = "https://app.example"
ENABLED = ClientSubscriptionSettings(enabled=True, allow=("chat.*",))


async def client_update(running: Running, body: Any, **kw: Any) -> Response:
    return await running.public_api("POST", "/subscriptions", body, **kw)


async def topics_of(running: Running, consumer_id: str) -> list[str]:
    response = await running.api("GET", f"/consumers/{consumer_id}")
    assert response.status == 200, response.text
    return list(response.json()["subscriptions"])


@pytest.fixture
async def enabled() -> AsyncIterator[Running]:
    async with running_server(client_subscriptions=ENABLED, cors_origins=(ORIGIN,)) as running:
        yield running


# --- off by default ------------------------------------------------------------------------


async def test_disabled_by_default(server: Running) -> None:
    consumer_id = await server.create_consumer(["chat.a"])
    response = await client_update(server, {"consumer_id": consumer_id, "add": ["chat.b"]})
    assert_json_error(response, 404, "not-found")
    assert await topics_of(server, consumer_id) == ["chat.a"]


async def test_enabled_with_empty_allow_list_forbids_everything() -> None:
    settings = ClientSubscriptionSettings(enabled=True)
    async with running_server(client_subscriptions=settings) as running:
        consumer_id = await running.create_consumer()
        response = await client_update(running, {"consumer_id": consumer_id, "add": ["chat.a"]})
        assert response.status == 200, response.text
        result = response.json()
        assert result["subscriptions"] == []
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [("chat.a", "forbidden")]


async def test_not_served_on_the_admin_listener(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer()
    response = await enabled.api("POST", "/subscriptions", {"consumer_id": consumer_id})
    assert_json_error(response, 404, "not-found")


# --- adding and removing -------------------------------------------------------------------


async def test_allowed_topics_are_added_and_forbidden_ones_reported(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer(["news"])
    response = await client_update(
        enabled,
        {"consumer_id": consumer_id, "add": ["chat.room2", "admin.secrets", "chat.room1", "chat"]},
    )
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()
    assert set(result) == {"consumer_id", "subscriptions", "errors"}
    assert result["consumer_id"] == consumer_id
    assert result["subscriptions"] == ["chat.room1", "chat.room2", "news"]
    assert [(e["topic"], e["code"]) for e in result["errors"]] == [
        ("admin.secrets", "forbidden"),
        ("chat", "forbidden"),
    ]
    assert all(isinstance(e["message"], str) and e["message"] for e in result["errors"])
    assert await topics_of(enabled, consumer_id) == ["chat.room1", "chat.room2", "news"]


async def test_remove_and_idempotence(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer()
    body = {"consumer_id": consumer_id, "add": ["chat.a", "chat.b", "chat.a"]}
    for _ in range(2):
        response = await client_update(enabled, body)
        assert response.json() == {
            "consumer_id": consumer_id,
            "subscriptions": ["chat.a", "chat.b"],
            "errors": [],
        }
    for _ in range(2):
        response = await client_update(
            enabled, {"consumer_id": consumer_id, "remove": ["chat.a", "chat.never"]}
        )
        assert response.status == 200, response.text
        assert response.json() == {
            "consumer_id": consumer_id,
            "subscriptions": ["chat.b"],
            "errors": [],
        }
    both = await client_update(
        enabled, {"consumer_id": consumer_id, "add": ["chat.c"], "remove": ["chat.b"]}
    )
    assert both.json()["subscriptions"] == ["chat.c"]
    nothing = await client_update(enabled, {"consumer_id": consumer_id})
    assert nothing.status == 200
    assert nothing.json()["subscriptions"] == ["chat.c"]
    assert await topics_of(enabled, consumer_id) == ["chat.c"]


async def test_client_added_topic_reaches_the_stream(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer()
    client = await enabled.stream(consumer_id)
    assert client.status == 200
    await client.opening()
    response = await client_update(enabled, {"consumer_id": consumer_id, "add": ["chat.lobby"]})
    assert response.json()["subscriptions"] == ["chat.lobby"]
    await enabled.publish("chat.lobby", "hi there")
    frame = await client.data_frame()
    assert (frame.id, frame.decoded) == ("1", ["chat.lobby", "hi there"])
    client.close()


async def test_refused_by_broker_is_reported(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer()
    enabled.broker.rejected_topics.add("chat.bad")
    response = await client_update(
        enabled, {"consumer_id": consumer_id, "add": ["chat.bad", "chat.good"]}
    )
    assert response.status == 200, response.text
    result = response.json()
    assert result["subscriptions"] == ["chat.good"]
    assert [(e["topic"], e["code"]) for e in result["errors"]] == [
        ("chat.bad", "subscription-failure")
    ]


# --- bad requests ----------------------------------------------------------------------


async def test_unknown_consumer_is_404(enabled: Running) -> None:
    await enabled.create_consumer(id="real")
    for consumer_id in ["ghost", "a/b", "has space", "x" * 129]:
        response = await client_update(enabled, {"consumer_id": consumer_id, "add": ["chat.a"]})
        assert_json_error(response, 404, "not-found")
    assert await topics_of(enabled, "real") == []


@pytest.mark.parametrize(
    "body",
    [
        {"add": ["chat.a"]},
        {"consumer_id": None, "add": ["chat.a"]},
        {"consumer_id": 5, "add": ["chat.a"]},
        {"consumer_id": ["real"], "add": ["chat.a"]},
        {"consumer_id": {"id": "real"}},
        {"consumer_id": True},
    ],
    ids=["missing", "null", "int", "list", "object", "bool"],
)
async def test_missing_or_wrong_typed_consumer_id_is_400(enabled: Running, body: Any) -> None:
    await enabled.create_consumer(id="real")
    assert_json_error(await client_update(enabled, body), 400)
    assert await topics_of(enabled, "real") == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{bad",
        b"[1,2]",
        b'"str"',
        b"null",
        b"\xff\xfe",
        {"consumer_id": "real", "add": "chat.a"},
        {"consumer_id": "real", "add": {"x": 1}},
        {"consumer_id": "real", "add": [1]},
        {"consumer_id": "real", "remove": "chat.a"},
        {"consumer_id": "real", "add": [""]},
        {"consumer_id": "real", "add": ["chat.\x01"]},
        {"consumer_id": "real", "add": ["chat." + "x" * 252]},
        {"consumer_id": "real", "adds": ["chat.a"]},
    ],
    ids=[
        "empty",
        "broken-json",
        "array",
        "string",
        "null",
        "bad-utf8",
        "add-string",
        "add-object",
        "add-int",
        "remove-string",
        "empty-topic",
        "control-char",
        "too-long-topic",
        "unknown-field",
    ],
)
async def test_bad_body_is_400(enabled: Running, body: Any) -> None:
    await enabled.create_consumer(["chat.keep"], id="real")
    assert_json_error(await client_update(enabled, body), 400)
    assert await topics_of(enabled, "real") == ["chat.keep"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "BREW"])
async def test_wrong_method_is_405(enabled: Running, method: str) -> None:
    assert_json_error(await enabled.public_api(method, "/subscriptions"), 405)


# --- CORS ----------------------------------------------------------------------------


async def test_preflight_from_allowed_origin(enabled: Running) -> None:
    response = await enabled.public_api(
        "OPTIONS",
        "/subscriptions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status == 204, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    assert response.body == b""


async def test_preflight_from_other_origin_grants_nothing(enabled: Running) -> None:
    response = await enabled.public_api(
        "OPTIONS",
        "/subscriptions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status == 204
    assert "access-control-allow-origin" not in response.headers


async def test_cors_headers_on_responses(enabled: Running) -> None:
    consumer_id = await enabled.create_consumer()
    allowed = await client_update(
        enabled, {"consumer_id": consumer_id, "add": ["chat.a"]}, headers={"Origin": ORIGIN}
    )
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    # Errors carry them too, or the page could not read why it failed.
    missing = await client_update(
        enabled, {"consumer_id": "ghost", "add": ["chat.a"]}, headers={"Origin": ORIGIN}
    )
    assert_json_error(missing, 404)
    assert missing.headers["access-control-allow-origin"] == ORIGIN
    other = await client_update(
        enabled,
        {"consumer_id": consumer_id, "add": ["chat.b"]},
        headers={"Origin": "https://evil.example"},
    )
    assert other.status == 200
    assert "access-control-allow-origin" not in other.headers
