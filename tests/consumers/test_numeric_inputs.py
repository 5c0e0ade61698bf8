"""Numeric request values are at most 20 ASCII digits: other characters that Python
calls digits (superscripts such as ``²``) and numbers too long for ``int`` are
refused with a 400 or ignored, never a 500; a ``Content-Length`` of thousands of
digits is a body far over any limit (413)."""

from __future__ import annotations

import asyncio

import pytest

from service.config import ClientSubscriptionSettings
from tests.support import Running, assert_json_error, parse_response, running_server

HUGE = "9" * 5000


@pytest.mark.parametrize("limit", ["%C2%B2", "1%C2%B9", "%D9%A1", HUGE])
async def test_list_consumers_limit_with_unusable_digits_is_400(
    server: Running, limit: str
) -> None:
    await server.create_consumer(id="c1")
    assert_json_error(await server.api("GET", f"/consumers?limit={limit}"), 400, "bad-request")


@pytest.mark.parametrize("value", ["%C2%B2", "%D9%A1", HUGE])
async def test_last_event_id_query_with_unusable_digits_is_400(server: Running, value: str) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(consumer_id, query=f"last_event_id={value}")
    assert client.status == 400, client.error_body
    assert client.error_json()["error"]["code"] == "bad-request"


async def test_last_event_id_header_with_non_ascii_digits_is_ignored(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    await server.publish("t", "first")
    reader, writer = await asyncio.open_connection(*server.public)
    try:
        # "²" as the single Latin-1 byte a header value carries it as.
        writer.write(
            f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Last-Event-ID: \xb2\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert parse_response(head).status == 200, head
        # Ignored as not ours: the stream starts as without any id, with what
        # no stream has been sent yet.
        body = b""
        while b'"first"' not in body:
            body += await asyncio.wait_for(reader.read(4096), 5)
        assert b'id: 1\nevent: message\ndata: ["t","first"]' in body
    finally:
        writer.close()


async def test_last_event_id_header_too_long_for_int_is_ignored(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    await server.publish("t", "first")
    client = await server.stream(consumer_id, headers={"Last-Event-ID": HUGE})
    assert client.status == 200, client.error_body
    await client.opening()
    (frame,) = await client.messages(1)
    assert (frame.id, frame.payload) == ("1", "first")
    client.close()


async def test_last_event_id_over_64_bits_is_400(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(consumer_id, query=f"last_event_id={2**63}")
    assert client.status == 400, client.error_body
    assert client.error_json()["error"]["code"] == "bad-request"


async def test_largest_last_event_id_is_accepted(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    await server.publish("t", "first")
    # Beyond anything this consumer produced: treated as no id at all.
    client = await server.stream(consumer_id, query=f"last_event_id={2**63 - 1}")
    assert client.status == 200, client.error_body
    await client.opening()
    (frame,) = await client.messages(1)
    assert (frame.id, frame.payload) == ("1", "first")
    client.close()


@pytest.mark.parametrize("path", ["/publish?topic=t", "/consumers", "/consumers/c1/subscriptions"])
async def test_content_length_too_long_for_int_is_413(server: Running, path: str) -> None:
    await server.create_consumer(id="c1")
    response = await server.api("POST", path, headers={"Content-Length": HUGE}, raw_body=b"{")
    assert_json_error(response, 413, "payload-too-large")
    assert (await server.api("POST", "/publish?topic=t", b"ok")).status == 202


async def test_content_length_too_long_for_int_is_413_on_the_public_listener() -> None:
    enabled = ClientSubscriptionSettings(enabled=True, allow=("*",))
    async with running_server(client_subscriptions=enabled) as running:
        response = await running.public_api(
            "POST", "/subscriptions", headers={"Content-Length": HUGE}, raw_body=b"{"
        )
        assert_json_error(response, 413, "payload-too-large")


async def test_content_length_with_leading_zeros_is_its_value(server: Running) -> None:
    response = await server.api(
        "POST", "/publish?topic=t", headers={"Content-Length": "0" * 30 + "2"}, raw_body=b"ok"
    )
    assert response.status == 202, response.text
