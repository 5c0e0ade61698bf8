"""Numeric request values are ASCII digits: other characters that Python calls
digits (superscripts such as ``²``) are refused with a 400 or ignored, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import Running, assert_json_error, parse_response


@pytest.mark.parametrize("limit", ["%C2%B2", "1%C2%B9", "%D9%A1"])
async def test_list_consumers_limit_with_non_ascii_digits_is_400(
    server: Running, limit: str
) -> None:
    await server.create_consumer(id="c1")
    assert_json_error(await server.api("GET", f"/consumers?limit={limit}"), 400, "bad-request")


@pytest.mark.parametrize("value", ["%C2%B2", "%D9%A1"])
async def test_last_event_id_query_with_non_ascii_digits_is_400(
    server: Running, value: str
) -> None:
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
