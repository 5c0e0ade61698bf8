"""The client address behind trusted proxies: ``client_ip`` and what ``stream.opened`` logs."""

from __future__ import annotations

import io
import json
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

import pytest

from service.web.client_ip import client_ip
from tests.support import captured_logs, running_server

LOOPBACK = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
PROXIES = (*LOOPBACK, ip_network("10.0.0.0/8"))


# --- client_ip ------------------------------------------------------------------------


def test_trusted_peer_single_forwarded_address() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7"}
    assert client_ip("127.0.0.1", headers, LOOPBACK) == "203.0.113.7"


def test_trusted_peer_chain_takes_rightmost_untrusted_hop() -> None:
    # client -> 10.0.0.2 (inner proxy) -> 127.0.0.1 (peer)
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.0.0.2"}
    assert client_ip("127.0.0.1", headers, PROXIES) == "203.0.113.7"


def test_forged_left_hops_are_ignored() -> None:
    # The client wrote "6.6.6.6" itself; only what our proxy appended counts.
    headers = {"X-Forwarded-For": "6.6.6.6,203.0.113.7"}
    assert client_ip("127.0.0.1", headers, LOOPBACK) == "203.0.113.7"


def test_answers_follow_the_trusted_networks_given() -> None:
    # Answers are remembered per set of networks: another set, even one made and
    # dropped over and over (so it may land where an earlier one was), is judged anew.
    headers = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(50):
        assert client_ip("10.1.2.3", headers, PROXIES) == "203.0.113.7"
        assert client_ip("10.1.2.3", headers, tuple(LOOPBACK)) == "10.1.2.3"
        assert client_ip("10.1.2.3", headers, (ip_network("10.1.0.0/16"),)) == "203.0.113.7"
        assert client_ip("10.1.2.3", headers, (ip_network("10.2.0.0/16"),)) == "10.1.2.3"
        assert client_ip("10.1.2.3", headers, ()) == "10.1.2.3"


def test_untrusted_peer_ignores_forwarding_headers() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}
    assert client_ip("198.51.100.9", headers, LOOPBACK) == "198.51.100.9"


def test_no_trusted_proxies_means_peer_always() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}
    assert client_ip("127.0.0.1", headers, ()) == "127.0.0.1"


def test_x_real_ip_from_trusted_peer() -> None:
    assert client_ip("127.0.0.1", {"X-Real-IP": " 203.0.113.9 "}, LOOPBACK) == "203.0.113.9"


def test_x_forwarded_for_wins_over_x_real_ip() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.9"}
    assert client_ip("127.0.0.1", headers, LOOPBACK) == "203.0.113.7"


def test_all_trusted_chain_gives_leftmost_hop() -> None:
    headers = {"X-Forwarded-For": "10.0.0.1, 10.0.0.2"}
    assert client_ip("127.0.0.1", headers, PROXIES) == "10.0.0.1"


def test_ipv6_hops() -> None:
    headers = {"X-Forwarded-For": "2001:db8::7"}
    assert client_ip("::1", headers, LOOPBACK) == "2001:db8::7"


def test_no_headers_gives_peer() -> None:
    assert client_ip("127.0.0.1", {}, LOOPBACK) == "127.0.0.1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Forwarded-For": "not-an-ip"}, "127.0.0.1"),
        ({"X-Forwarded-For": "203.0.113.7:4444"}, "127.0.0.1"),
        ({"X-Forwarded-For": "<script>"}, "127.0.0.1"),
        ({"X-Forwarded-For": " , ,"}, "127.0.0.1"),
        ({"X-Forwarded-For": ""}, "127.0.0.1"),
        # Garbage left of a valid untrusted hop is never reached.
        ({"X-Forwarded-For": "garbage, 203.0.113.7"}, "203.0.113.7"),
        # Garbage right of a trusted hop stops the walk at that hop.
        ({"X-Forwarded-For": "203.0.113.7, garbage, 10.0.0.2"}, "10.0.0.2"),
        ({"X-Real-IP": "bogus value"}, "127.0.0.1"),
        ({"X-Real-IP": ""}, "127.0.0.1"),
    ],
)
def test_garbage_values_never_become_the_client(headers: dict[str, str], expected: str) -> None:
    assert client_ip("127.0.0.1", headers, PROXIES) == expected


# --- end to end: what stream.opened logs ----------------------------------------------------


def events(buffer: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == name]


async def opened_remote_ip(**settings: Any) -> str:
    with captured_logs() as buffer:
        async with running_server(**settings) as running:
            consumer_id = await running.create_consumer(["news"])
            client = await running.stream(consumer_id, headers={"X-Forwarded-For": "203.0.113.7"})
            assert client.status == 200
            await client.opening()
            client.close()
        opened = events(buffer, "stream.opened")
    assert len(opened) == 1, opened
    assert opened[0]["consumer_id"] == consumer_id
    return str(opened[0]["remote_ip"])


async def test_stream_opened_logs_forwarded_client_behind_loopback_proxy() -> None:
    assert await opened_remote_ip() == "203.0.113.7"


async def test_stream_opened_logs_peer_when_no_proxy_is_trusted() -> None:
    assert await opened_remote_ip(trusted_proxies=()) == "127.0.0.1"


async def test_control_request_log_uses_forwarded_client() -> None:
    with captured_logs() as buffer:
        async with running_server() as running:
            response = await running.api(
                "POST", "/consumers", {}, headers={"X-Forwarded-For": "198.51.100.23"}
            )
            assert response.status == 201
        requests = [r for r in events(buffer, "http.request") if r["path"] == "/consumers"]
    assert [r["remote_ip"] for r in requests] == ["198.51.100.23"]
