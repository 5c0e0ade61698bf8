"""Topics that UTF-8 cannot carry, or with control characters, are refused where they come in."""

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


def test_control_characters_are_refused_ascii_or_not() -> None:
    # Every ASCII control (DEL included) and the C1 controls; nothing else of the first
    # 12,288 code points (spaces, separators and the like are topic characters).
    controls = {*range(0x20), 0x7F, *range(0x80, 0xA0)}
    for code in range(0x3000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates: above
        problem = topic_problem(f"a{chr(code)}b")
        expected = "topic must not contain control characters" if code in controls else None
        assert problem == expected, hex(code)
