"""Topics that UTF-8 cannot carry are refused where they come in."""

from __future__ import annotations

from service.consumers.consumer import topic_problem
from tests.support import Running, assert_json_error


def test_lone_surrogates_are_not_topics() -> None:
    assert topic_problem("\ud800") == "topic must not contain lone surrogates"
    assert topic_problem("a\udfffb") is not None
    assert topic_problem("caf\u00e9 \U0001f600") is None  # real non-ASCII is fine


async def test_a_json_body_spelling_a_lone_surrogate_is_a_400(server: Running) -> None:
    body = b'{"topics": ["ok", "bad\\ud800"]}'
    assert_json_error(await server.api("POST", "/consumers", body), 400, "bad-topic")
    consumer_id = await server.create_consumer(["ok"])
    added = await server.api(
        "POST", f"/consumers/{consumer_id}/subscriptions", b'{"add": ["\\udc00"]}'
    )
    assert_json_error(added, 400, "bad-topic")
    # The consumer's stream still opens: nothing unencodable reached its info frame.
    client = await server.stream(consumer_id)
    info = await client.opening()
    assert info is not None
    client.close()
