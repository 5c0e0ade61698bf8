"""``GET /events`` query values: checked whether or not they end up used, and
topics taken verbatim (as ``POST /publish`` takes its topic)."""

from __future__ import annotations

from service.config import ClientSubscriptionSettings
from tests.support import Running, running_server

ANY_TOPIC = ClientSubscriptionSettings(enabled=True, allow=("*",))


async def test_bad_last_event_id_query_is_400_even_beside_a_valid_header(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(
        consumer_id, query="last_event_id=null", headers={"Last-Event-ID": "3"}
    )
    assert client.status == 400, client.error_body
    assert client.error_json()["error"]["code"] == "bad-request"


async def test_header_still_wins_over_a_valid_query(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    for n in range(1, 4):
        await server.publish("t", f"m{n}")
    client = await server.stream(
        consumer_id, query="last_event_id=0", headers={"Last-Event-ID": "2"}
    )
    assert client.status == 200, client.error_body
    await client.opening()
    (frame,) = await client.messages(1)
    assert (frame.id, frame.payload) == ("3", "m3")
    client.close()


async def test_control_character_in_topics_is_400_and_creates_nothing() -> None:
    async with running_server(
        auto_create_consumers=True, client_subscriptions=ANY_TOPIC
    ) as running:
        client = await running.stream(None, query="topics=ok,a%14b")
        assert client.status == 400, client.error_body
        assert client.error_json()["error"]["code"] == "bad-topic"
        assert len(running.manager) == 0


async def test_bad_topics_beside_an_id_is_400(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(consumer_id, query="topics=a%14b")
    assert client.status == 400, client.error_body
    assert client.error_json()["error"]["code"] == "bad-topic"


async def test_topics_are_taken_verbatim() -> None:
    async with running_server(
        auto_create_consumers=True, client_subscriptions=ANY_TOPIC
    ) as running:
        client = await running.stream(None, query="topics=%20padded%20,caf%C3%A9")
        assert client.status == 200, client.error_body
        _, info = await client.opening()
        assert info.inner["subscriptions"] == [" padded ", "café"]
        client.close()
