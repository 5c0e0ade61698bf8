"""The control API on the admin listener, over real HTTP.

Consumers (create, describe, list), subscriptions, publish, bearer-token auth,
health/readiness, and the promise that every bad input is a JSON 4xx, never a
500 or a stack trace.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.config import LimitSettings
from tests.support import (
    DEFAULT_TIMEOUT,
    Response,
    Running,
    assert_json_error,
    parse_response,
    running_server,
    wait_for,
)

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
TOKEN = "s3cret"


async def raw_exchange(address: tuple[str, int], head: str, body: bytes = b"") -> Response:
    """Send ``head`` (and ``body``) verbatim; read the reply until the server closes."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)
    finally:
        writer.close()
    return parse_response(data)


async def subscriptions(running: Running, consumer_id: str, body: Any) -> Response:
    return await running.api("POST", f"/consumers/{consumer_id}/subscriptions", body)


# --- POST /consumers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [None, {}, b"", b"  \n"], ids=["no-body", "empty-object", "empty", "blank"]
)
async def test_create_consumer_without_fields(server: Running, body: Any) -> None:
    response = await server.api("POST", "/consumers", body)
    assert response.status == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    created = response.json()
    assert {"consumer_id", "consumer_ttl_millis", "subscriptions"} <= set(created)
    assert created["consumer_ttl_millis"] == 60_000
    assert created["subscriptions"] == []
    assert server.manager.get(created["consumer_id"]) is not None
    assert len(server.manager) == 1


async def test_create_consumer_with_topics_sorted_and_deduplicated(server: Running) -> None:
    response = await server.api("POST", "/consumers", {"topics": ["zeta", "alpha", "mid", "alpha"]})
    assert response.status == 201, response.text
    created = response.json()
    assert created["subscriptions"] == ["alpha", "mid", "zeta"]
    assert created.get("errors", []) == []
    described = (await server.api("GET", f"/consumers/{created['consumer_id']}")).json()
    assert described["subscriptions"] == ["alpha", "mid", "zeta"]


async def test_create_reports_ttl_from_settings() -> None:
    async with running_server(consumer_ttl=2.5) as running:
        response = await running.api("POST", "/consumers")
        assert response.status == 201
        assert response.json()["consumer_ttl_millis"] == 2500


@pytest.mark.parametrize(
    "consumer_id",
    ["a", "A-b_c.d~e", "0123456789", "x" * 128, "~", "...", "Mixed.Case-123_~"],
)
async def test_create_with_valid_custom_id(server: Running, consumer_id: str) -> None:
    response = await server.api("POST", "/consumers", {"id": consumer_id, "topics": ["t"]})
    assert response.status == 201, response.text
    assert response.json()["consumer_id"] == consumer_id
    assert response.json()["subscriptions"] == ["t"]
    described = await server.api("GET", f"/consumers/{consumer_id}")
    assert described.status == 200, described.text
    assert described.json()["consumer_id"] == consumer_id


async def test_create_with_taken_id_is_409_and_keeps_the_original(server: Running) -> None:
    first = await server.api("POST", "/consumers", {"id": "taken", "topics": ["one"]})
    assert first.status == 201
    second = await server.api("POST", "/consumers", {"id": "taken", "topics": ["two"]})
    assert_json_error(second, 409)
    described = (await server.api("GET", "/consumers/taken")).json()
    assert described["subscriptions"] == ["one"]
    assert len(server.manager) == 1


async def test_generated_ids_are_url_safe_long_and_unique(server: Running) -> None:
    ids = [await server.create_consumer() for _ in range(60)]
    assert len(set(ids)) == len(ids)
    for consumer_id in ids:
        assert URL_SAFE.fullmatch(consumer_id), consumer_id
        # 128 random bits need at least 22 base64url characters.
        assert len(consumer_id) >= 22, consumer_id
    # Not a counter or a shared prefix: the ids differ from their first characters.
    assert len({consumer_id[:6] for consumer_id in ids}) > 50
    # Each generated id works as a path segment without escaping.
    response = await server.api("GET", f"/consumers/{ids[0]}")
    assert response.status == 200
    assert response.json()["consumer_id"] == ids[0]


async def test_max_consumers_is_429_json() -> None:
    async with running_server(limits=LimitSettings(max_consumers=2)) as running:
        await running.create_consumer()
        await running.create_consumer(id="second")
        refused = await running.api("POST", "/consumers", {"id": "third"})
        assert_json_error(refused, 429)
        assert len(running.manager) == 2
        assert running.manager.get("third") is None
        # Room again after a delete.
        assert (await running.api("DELETE", "/consumers/second")).status == 204
        again = await running.api("POST", "/consumers", {"id": "third"})
        assert again.status == 201, again.text


async def test_too_many_initial_topics_are_listed_as_errors() -> None:
    limits = LimitSettings(max_subscriptions_per_consumer=2)
    async with running_server(limits=limits) as running:
        response = await running.api("POST", "/consumers", {"topics": ["a", "b", "c", "d"]})
        assert response.status == 201, response.text
        created = response.json()
        assert created["subscriptions"] == ["a", "b"]
        assert [(e["topic"], e["code"]) for e in created["errors"]] == [
            ("c", "limit-exceeded"),
            ("d", "limit-exceeded"),
        ]


# --- GET /consumers/{id} and GET /consumers -------------------------------------------------


async def test_describe_consumer_follows_its_stream(server: Running) -> None:
    consumer_id = await server.create_consumer(["news", "alerts"])
    described = await server.api("GET", f"/consumers/{consumer_id}")
    assert described.status == 200
    view = described.json()
    assert view["consumer_id"] == consumer_id
    assert view["connected"] is False
    assert view["subscriptions"] == ["alerts", "news"]
    assert view["buffered"] == 0
    assert abs(view["created_at"] - time.time()) < 60  # a Unix timestamp
    assert view["disconnected_at"] is None

    await server.publish("news", "one")
    await server.publish("alerts", "two")
    await server.publish("elsewhere", "not for us")
    view = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert (view["connected"], view["buffered"]) == (False, 2)

    client = await server.stream(consumer_id)
    assert client.status == 200
    await client.opening()
    assert [f.decoded for f in await client.messages(2)] == [["news", "one"], ["alerts", "two"]]
    view = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert view["connected"] is True
    assert view["subscriptions"] == ["alerts", "news"]

    client.close()

    async def disconnected() -> bool:
        response = await server.api("GET", f"/consumers/{consumer_id}")
        return response.json()["connected"] is False

    closed = time.time()
    await wait_for(disconnected)
    view = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert abs(view["disconnected_at"] - closed) < 5  # a Unix timestamp, as created_at


@pytest.mark.parametrize(
    "path",
    ["/consumers/nobody", "/consumers/a%2Fb", "/consumers/" + "x" * 129, "/consumers/a%20b"],
    ids=["unknown", "slash", "too-long", "space"],
)
async def test_describe_unknown_consumer_is_404(server: Running, path: str) -> None:
    await server.create_consumer(id="somebody")
    assert_json_error(await server.api("GET", path), 404, "not-found")
    assert_json_error(await server.api("DELETE", path), 404, "not-found")


async def test_list_consumers_paginates_in_id_order(server: Running) -> None:
    for consumer_id in ["c3", "c1", "c5", "c2", "c4"]:
        await server.create_consumer(id=consumer_id)

    first = await server.api("GET", "/consumers?limit=2")
    assert first.status == 200
    assert first.json() == {"consumers": ["c1", "c2"], "next": "c2", "count": 5}

    second = (await server.api("GET", "/consumers?limit=2&after=c2")).json()
    assert second == {"consumers": ["c3", "c4"], "next": "c4", "count": 5}

    last = (await server.api("GET", "/consumers?limit=2&after=c4")).json()
    assert last == {"consumers": ["c5"], "next": None, "count": 5}

    everything = (await server.api("GET", "/consumers")).json()
    assert everything == {"consumers": ["c1", "c2", "c3", "c4", "c5"], "next": None, "count": 5}

    exact = (await server.api("GET", "/consumers?limit=5")).json()
    assert exact == {"consumers": ["c1", "c2", "c3", "c4", "c5"], "next": None, "count": 5}

    # A cursor between ids, or past the end.
    between = (await server.api("GET", "/consumers?limit=2&after=c2a")).json()
    assert between["consumers"] == ["c3", "c4"]
    beyond = (await server.api("GET", "/consumers?after=zzz")).json()
    assert beyond == {"consumers": [], "next": None, "count": 5}


async def test_list_consumers_when_empty(server: Running) -> None:
    response = await server.api("GET", "/consumers")
    assert response.status == 200
    assert response.json() == {"consumers": [], "next": None, "count": 0}


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "100000", "", "%20"])
async def test_list_consumers_bad_limit_is_400(server: Running, limit: str) -> None:
    await server.create_consumer(id="c1")
    assert_json_error(await server.api("GET", f"/consumers?limit={limit}"), 400)


# --- POST /consumers/{id}/subscriptions -------------------------------------------------------


async def test_add_and_remove_subscriptions(server: Running) -> None:
    consumer_id = await server.create_consumer(["base"])
    response = await subscriptions(server, consumer_id, {"add": ["zed", "alpha"]})
    assert response.status == 200, response.text
    assert response.json() == {
        "consumer_id": consumer_id,
        "subscriptions": ["alpha", "base", "zed"],
        "errors": [],
    }

    response = await subscriptions(server, consumer_id, {"remove": ["base"], "add": ["mid"]})
    assert response.json() == {
        "consumer_id": consumer_id,
        "subscriptions": ["alpha", "mid", "zed"],
        "errors": [],
    }
    described = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert described["subscriptions"] == ["alpha", "mid", "zed"]

    # The changes are real: messages follow the new subscriptions only.
    await server.publish("base", "gone")
    await server.publish("mid", "kept")
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 1


async def test_subscriptions_are_idempotent(server: Running) -> None:
    consumer_id = await server.create_consumer(["a"])
    for _ in range(2):
        response = await subscriptions(server, consumer_id, {"add": ["b", "a", "b"]})
        assert response.status == 200
        assert response.json()["subscriptions"] == ["a", "b"]
        assert response.json()["errors"] == []
    for _ in range(2):
        response = await subscriptions(server, consumer_id, {"remove": ["b", "never-there"]})
        assert response.status == 200
        assert response.json()["subscriptions"] == ["a"]
        assert response.json()["errors"] == []
    # Nothing to do is still a valid request.
    nothing = await subscriptions(server, consumer_id, {})
    assert nothing.status == 200
    assert nothing.json()["subscriptions"] == ["a"]
    explicit_empty = await subscriptions(server, consumer_id, {"add": [], "remove": []})
    assert explicit_empty.json()["subscriptions"] == ["a"]

    # Adding twice does not double deliveries.
    await server.publish("a", "once")
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 1


async def test_subscriptions_for_unknown_consumer_is_404(server: Running) -> None:
    response = await subscriptions(server, "ghost", {"add": ["a"]})
    assert_json_error(response, 404, "not-found")
    assert len(server.manager) == 0


async def test_subscription_limit_lists_extra_topics() -> None:
    limits = LimitSettings(max_subscriptions_per_consumer=3)
    async with running_server(limits=limits) as running:
        consumer_id = await running.create_consumer(["a"])
        response = await subscriptions(running, consumer_id, {"add": ["b", "c", "d", "e"]})
        assert response.status == 200, response.text
        result = response.json()
        assert result["subscriptions"] == ["a", "b", "c"]
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [
            ("d", "limit-exceeded"),
            ("e", "limit-exceeded"),
        ]
        assert all(e["message"] for e in result["errors"])
        # Removing makes room within the same request.
        swap = await subscriptions(running, consumer_id, {"remove": ["a"], "add": ["d"]})
        assert swap.json() == {
            "consumer_id": consumer_id,
            "subscriptions": ["b", "c", "d"],
            "errors": [],
        }
        # Topics already held never count as extra.
        again = await subscriptions(running, consumer_id, {"add": ["b", "c", "d"]})
        assert again.json()["errors"] == []


async def test_refused_subscription_is_reported_and_others_apply(server: Running) -> None:
    consumer_id = await server.create_consumer(["keep"])
    server.broker.rejected_topics.add("bad")
    response = await subscriptions(server, consumer_id, {"add": ["good", "bad", "other"]})
    assert response.status == 200, response.text
    result = response.json()
    assert result["subscriptions"] == ["good", "keep", "other"]
    assert len(result["errors"]) == 1
    error = result["errors"][0]
    assert (error["topic"], error["code"]) == ("bad", "subscription-failure")
    assert error["message"]

    described = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert described["subscriptions"] == ["good", "keep", "other"]
    await server.publish("good", "1")
    await server.publish("keep", "2")
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 2

    # Once the broker accepts it, the same request succeeds.
    server.broker.rejected_topics.discard("bad")
    retry = await subscriptions(server, consumer_id, {"add": ["bad"]})
    assert retry.json()["subscriptions"] == ["bad", "good", "keep", "other"]
    assert retry.json()["errors"] == []


async def test_refused_initial_topic_is_reported_on_create(server: Running) -> None:
    server.broker.rejected_topics.add("bad")
    response = await server.api("POST", "/consumers", {"topics": ["bad", "fine"]})
    assert response.status == 201, response.text
    created = response.json()
    assert created["subscriptions"] == ["fine"]
    assert [(e["topic"], e["code"]) for e in created["errors"]] == [("bad", "subscription-failure")]


# --- POST /publish -------------------------------------------------------------------------


async def test_publish_is_accepted_and_delivered(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(consumer_id)
    await client.opening()
    response = await server.api("POST", "/publish?topic=t", b"hello \xe2\x9c\x93")
    assert response.status == 202, response.text
    frame = await client.data_frame()
    assert (frame.id, frame.decoded) == ("1", ["t", "hello \u2713"])
    client.close()


async def test_publish_topic_is_taken_verbatim(server: Running) -> None:
    longest = "t" * 256
    consumer_id = await server.create_consumer([longest, "a b/c", " padded ", "caf\u00e9"])
    plain = await server.create_consumer(["padded", "t"])
    assert (await server.api("POST", f"/publish?topic={longest}", "x")).status == 202
    assert (await server.api("POST", "/publish?topic=a%20b%2Fc", "y")).status == 202
    assert (await server.api("POST", "/publish?topic=%20padded%20", "z")).status == 202
    assert (await server.api("POST", "/publish?topic=caf%C3%A9", "w")).status == 202
    assert (await server.api("POST", "/publish?topic=elsewhere", "v")).status == 202
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 4
    # Whitespace is part of the topic, not trimmed into another one.
    assert (await server.api("GET", f"/consumers/{plain}")).json()["buffered"] == 0
    # An empty body is a valid message.
    response = await server.api("POST", "/publish?topic=t", "")
    assert response.status == 202
    assert (await server.api("GET", f"/consumers/{plain}")).json()["buffered"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?",
        "?other=x",
        "?topic=",
        "?topic=a%01b",
        "?topic=line%0Abreak",
        "?topic=del%7F",
        "?topic=%C2%85next-line",
        "?topic=" + "t" * 257,
        "?topic=%FF%FE",
    ],
    ids=[
        "none",
        "bare",
        "other-arg",
        "empty",
        "control",
        "newline",
        "delete",
        "c1-control",
        "too-long",
        "bad-utf8",
    ],
)
async def test_publish_bad_topic_is_400(server: Running, query: str) -> None:
    consumer_id = await server.create_consumer(["t"])
    response = await server.api("POST", f"/publish{query}", "payload")
    assert_json_error(response, 400)
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 0


async def test_publish_body_limit() -> None:
    async with running_server(max_message_bytes=1024) as running:
        consumer_id = await running.create_consumer(["t"])
        at_limit = await running.api("POST", "/publish?topic=t", b"a" * 1024)
        assert at_limit.status == 202, at_limit.text
        over = await running.api("POST", "/publish?topic=t", b"b" * 1025)
        assert_json_error(over, 413, "payload-too-large")
        assert (await running.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 1


async def test_publish_huge_declared_body_is_refused_unread() -> None:
    async with running_server(max_message_bytes=1024) as running:
        consumer_id = await running.create_consumer(["t"])
        # 50 MB declared, none sent: the answer must come from the headers alone.
        head = (
            "POST /publish?topic=t HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{running.admin[1]}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
        )
        response = await raw_exchange(running.admin, head)
        error = assert_json_error(response, 413, "payload-too-large")
        assert "1024" in error["message"]
        assert int(response.headers["content-length"]) == len(response.body)
        assert (await running.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 0
        # The server is still fine afterwards.
        assert (await running.api("POST", "/publish?topic=t", b"ok")).status == 202


async def test_publish_huge_declared_body_with_some_bytes_sent() -> None:
    async with running_server(max_message_bytes=1024) as running:
        response = await running.api(
            "POST",
            "/publish?topic=t",
            headers={"Content-Length": str(50 * 1024 * 1024)},
            raw_body=b"z" * 4096,
        )
        assert_json_error(response, 413, "payload-too-large")


async def test_publish_chunked_body_over_limit_is_413() -> None:
    async with running_server(max_message_bytes=1024) as running:
        consumer_id = await running.create_consumer(["t"])
        chunk = b"c" * 600
        body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
        head = (
            "POST /publish?topic=t HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{running.admin[1]}\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        )
        response = await raw_exchange(running.admin, head, body)
        assert_json_error(response, 413, "payload-too-large")
        assert (await running.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 0


async def test_publish_when_broker_down_is_503(server: Running) -> None:
    server.broker.go_down()
    response = await server.api("POST", "/publish?topic=t", "x")
    assert_json_error(response, 503)
    server.broker.come_back()
    assert (await server.api("POST", "/publish?topic=t", "x")).status == 202


# --- bad input of every kind ----------------------------------------------------------------

BAD_JSON: list[Any] = [
    b"{bad",
    b"[1,2]",
    b'"str"',
    b"null",
    b"42",
    b"\xff\xfe{}",
    b'{"id": "\xc3("}',
]
BAD_JSON_IDS = ["broken", "array", "string", "null", "number", "bad-utf8", "bad-utf8-in-string"]


@pytest.mark.parametrize("body", BAD_JSON, ids=BAD_JSON_IDS)
async def test_create_with_bad_json_is_400(server: Running, body: bytes) -> None:
    assert_json_error(await server.api("POST", "/consumers", body), 400)
    assert len(server.manager) == 0


@pytest.mark.parametrize("body", BAD_JSON, ids=BAD_JSON_IDS)
async def test_subscriptions_with_bad_json_is_400(server: Running, body: bytes) -> None:
    consumer_id = await server.create_consumer(["a"])
    assert_json_error(await subscriptions(server, consumer_id, body), 400)
    assert server.manager.get(consumer_id).topics == {"a"}


@pytest.mark.parametrize(
    "body",
    [
        {"topics": "a"},
        {"topics": [1]},
        {"topics": ["ok", None]},
        {"topics": {"x": 1}},
        {"topics": [["nested"]]},
        {"topics": [""]},
        {"topics": ["a\x00b"]},
        {"topics": ["t" * 257]},
        {"id": 5},
        {"id": ""},
        {"id": "a/b"},
        {"id": "x" * 129},
        {"id": "with space"},
        {"id": "caf\u00e9"},
        {"id": ["a"]},
        {"id": True},
        {"name": "x"},
        {"id": "ok", "extra": 1},
    ],
    ids=[
        "topics-string",
        "topics-int",
        "topics-null-item",
        "topics-object",
        "topics-nested",
        "topic-empty",
        "topic-control",
        "topic-too-long",
        "id-int",
        "id-empty",
        "id-slash",
        "id-too-long",
        "id-space",
        "id-non-ascii",
        "id-list",
        "id-bool",
        "unknown-field",
        "extra-field",
    ],
)
async def test_create_with_wrong_fields_is_400(server: Running, body: dict[str, Any]) -> None:
    assert_json_error(await server.api("POST", "/consumers", body), 400)
    assert len(server.manager) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"add": "a"},
        {"add": {"x": 1}},
        {"add": [1]},
        {"add": ["ok", 2]},
        {"remove": "a"},
        {"remove": [None]},
        {"add": [""]},
        {"add": ["bad\x07"]},
        {"add": ["t" * 257]},
        {"remove": ["\x1f"]},
        {"adds": ["b"]},
        {"add": ["b"], "topics": ["c"]},
        b"",
    ],
    ids=[
        "add-string",
        "add-object",
        "add-int",
        "add-mixed",
        "remove-string",
        "remove-null-item",
        "add-empty-topic",
        "add-control",
        "add-too-long",
        "remove-control",
        "misspelt-field",
        "unknown-field",
        "no-body",
    ],
)
async def test_subscriptions_with_bad_body_is_400(server: Running, body: Any) -> None:
    consumer_id = await server.create_consumer(["a"])
    assert_json_error(await subscriptions(server, consumer_id, body), 400)
    # A rejected request changes nothing, not even its valid part.
    assert server.manager.get(consumer_id).topics == {"a"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/"),
        ("GET", "/consumers/x/y/z"),
        ("GET", "/consumers/x/subscriptions/extra"),
        ("GET", "/events"),
        ("GET", "/unifrost.js"),
        ("GET", "/consumers/"),
    ],
)
async def test_unknown_route_is_404_json(server: Running, method: str, path: str) -> None:
    await server.create_consumer(id="x")
    assert_json_error(await server.api(method, path), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/consumers"),
        ("DELETE", "/consumers"),
        ("PATCH", "/consumers/x"),
        ("POST", "/consumers/x"),
        ("PUT", "/consumers/x"),
        ("GET", "/consumers/x/subscriptions"),
        ("DELETE", "/consumers/x/subscriptions"),
        ("GET", "/publish?topic=t"),
        ("DELETE", "/publish"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
        ("BREW", "/consumers"),
        ("BREW", "/consumers/x"),
        ("BREW", "/nope"),
    ],
)
async def test_wrong_method_is_405_json(server: Running, method: str, path: str) -> None:
    await server.create_consumer(["a"], id="x")
    assert_json_error(await server.api(method, path), 405)
    assert server.manager.get("x").topics == {"a"}


@pytest.mark.parametrize("path", ["/consumers", "/consumers/x/subscriptions"])
async def test_json_body_over_its_limit_is_413(server: Running, path: str) -> None:
    await server.create_consumer(["a"], id="x")
    # Declared far larger than any JSON body may be; only a prefix is sent.
    response = await server.api(
        "POST", path, headers={"Content-Length": str(10 * 1024 * 1024)}, raw_body=b'{"topics": ['
    )
    assert_json_error(response, 413, "payload-too-large")
    assert len(server.manager) == 1
    assert server.manager.get("x").topics == {"a"}


async def test_no_server_errors_were_counted(server: Running) -> None:
    await server.api("POST", "/consumers", b"{bad")
    await server.api("BREW", "/consumers")
    await server.api("GET", "/consumers/a%2Fb")
    metrics = await server.api("GET", "/metrics")
    assert metrics.status == 200
    assert not re.search(r'unifrost_http_requests_total\{[^}]*code="5\d\d"', metrics.text)
    assert re.search(r'unifrost_http_requests_total\{[^}]*code="400"[^}]*\} 1\.0', metrics.text)


# --- auth --------------------------------------------------------------------------------

PROTECTED: list[tuple[str, str, Any]] = [
    ("POST", "/consumers", {"id": "intruder"}),
    ("GET", "/consumers", None),
    ("GET", "/consumers/existing", None),
    ("DELETE", "/consumers/existing", None),
    ("POST", "/consumers/existing/subscriptions", {"add": ["stolen"]}),
    ("POST", "/publish?topic=t", "forged"),
    ("GET", "/metrics", None),
]
PROTECTED_IDS = [f"{m} {p}" for m, p, _ in PROTECTED]
BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer s3cret-and-more"},
    {"Authorization": "Bearer S3CRET"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic s3cret"},
    {"Authorization": "Basic czNjcmV0OnMzY3JldA=="},
    {"Authorization": "s3cret"},
    {"Authorization": ""},
    {"X-Admin-Token": "s3cret"},
]
BAD_AUTH_IDS = [
    "none",
    "wrong",
    "longer",
    "case",
    "empty-bearer",
    "basic-token",
    "basic-creds",
    "no-scheme",
    "empty",
    "other-header",
]


@pytest.fixture
async def secured() -> AsyncIterator[Running]:
    async with running_server(admin_token=TOKEN) as running:
        await running.manager.create("existing", ["t"])
        yield running


@pytest.mark.parametrize("headers", BAD_AUTH, ids=BAD_AUTH_IDS)
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=PROTECTED_IDS)
async def test_admin_routes_need_the_token(
    secured: Running, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    response = await secured.api(method, path, body, headers=headers)
    assert_json_error(response, 401, "unauthorized")
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    # Nothing happened.
    assert secured.manager.page(10, None)[0] == ["existing"]
    existing = secured.manager.get("existing")
    assert existing.topics == {"t"}
    assert existing.buffered == 0


async def test_admin_routes_work_with_the_token(secured: Running) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = await secured.api("POST", "/consumers", {"id": "mine", "topics": ["t"]}, headers=auth)
    assert created.status == 201, created.text
    listed = await secured.api("GET", "/consumers", headers=auth)
    assert listed.json() == {"consumers": ["existing", "mine"], "next": None, "count": 2}
    described = await secured.api("GET", "/consumers/mine", headers=auth)
    assert described.json()["subscriptions"] == ["t"]
    changed = await secured.api(
        "POST", "/consumers/mine/subscriptions", {"add": ["u"]}, headers=auth
    )
    assert changed.json()["subscriptions"] == ["t", "u"]
    published = await secured.api("POST", "/publish?topic=t", "hi", headers=auth)
    assert published.status == 202, published.text
    assert secured.manager.get("mine").buffered == 1
    assert secured.manager.get("existing").buffered == 1
    # The scheme name is case-insensitive (RFC 7235).
    lower = await secured.api(
        "GET", "/consumers/mine", headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert lower.status == 200
    metrics = await secured.api("GET", "/metrics", headers=auth)
    assert metrics.status == 200
    assert "unifrost_consumers 2.0" in metrics.text
    deleted = await secured.api("DELETE", "/consumers/mine", headers=auth)
    assert deleted.status == 204
    assert secured.manager.get("mine") is None


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_needs_no_token(secured: Running, path: str) -> None:
    for call in (secured.api, secured.public_api):
        response = await call("GET", path)
        assert response.status == 200, response.text
        assert response.json()["status"] in ("ok", "ready")
        # A wrong token does not turn health checks away either.
        wrong = await call("GET", path, headers={"Authorization": "Bearer wrong"})
        assert wrong.status == 200, wrong.text


async def test_without_token_setting_no_auth_is_needed(server: Running) -> None:
    assert (await server.api("GET", "/consumers")).status == 200
    assert (await server.api("GET", "/metrics")).status == 200
    # A stray header is harmless.
    response = await server.api("GET", "/consumers", headers={"Authorization": "Bearer x"})
    assert response.status == 200


# --- health and readiness ----------------------------------------------------------------


async def test_health_and_readiness_on_both_listeners(server: Running) -> None:
    for call in (server.api, server.public_api):
        healthz = await call("GET", "/healthz")
        assert healthz.status == 200
        assert healthz.json()["status"] == "ok"
        readyz = await call("GET", "/readyz")
        assert readyz.status == 200
        assert readyz.json()["status"] == "ready"


async def test_readiness_follows_the_broker(server: Running) -> None:
    server.broker.go_down()
    for call in (server.api, server.public_api):
        readyz = await call("GET", "/readyz")
        assert readyz.status == 503
        assert readyz.json()["status"] == "unavailable"
        assert readyz.json()["broker"] == "down"
        # Alive, just not ready.
        assert (await call("GET", "/healthz")).status == 200
    server.broker.come_back()
    for call in (server.api, server.public_api):
        assert (await call("GET", "/readyz")).status == 200


async def test_publish_body_sent_in_full_over_limit_gets_json_413() -> None:
    # A client that keeps sending must still read the JSON answer, not a reset.
    async with running_server(max_message_bytes=1024) as running:
        response = await running.api("POST", "/publish?topic=t", b"q" * (2 * 1024 * 1024))
        assert_json_error(response, 413, "payload-too-large")
        assert (await running.api("POST", "/publish?topic=t", b"ok")).status == 202
