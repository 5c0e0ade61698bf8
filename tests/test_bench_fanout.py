"""The single-server benchmarks' unifrost: on the ports it was given, logging warnings only."""

from __future__ import annotations

import http.client
import time

import pytest

from bench.fanout import _request, start_server


def test_the_server_answers_on_its_ports_without_a_line_per_request(
    capfd: pytest.CaptureFixture[str],
) -> None:
    proc, public, admin = start_server("1MiB")
    try:
        control = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        assert _request(control, "POST", "/publish?topic=t", b"hello") == {"topic": "t", "bytes": 5}
        events = http.client.HTTPConnection("127.0.0.1", public, timeout=10)
        events.request("GET", "/events")  # no consumer id: refused, on the public listener
        assert events.getresponse().status == 400
        time.sleep(0.5)  # log lines leave within 0.1 s
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    out, err = capfd.readouterr()
    assert "http.request" not in out + err
