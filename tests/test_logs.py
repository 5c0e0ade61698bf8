"""Structured logs: one JSON object per line, the SPEC's events with their context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from service.log import FLUSH_DELAY, LogOutput, get_logger, log_output, set_log_output
from tests.support import SseClient, captured_logs, metric, running_server

TOKEN = "adm1n-t0ken-Zq8vXw"


def parse(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line, each of which must be a JSON object with the common fields."""
    records = []
    for line in buffer.getvalue().splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert isinstance(record.get("event"), str), line
        assert isinstance(record.get("level"), str), line
        assert_utc_timestamp(record.get("timestamp"))
        records.append(record)
    return records


def assert_utc_timestamp(value: Any) -> None:
    assert isinstance(value, str), value
    assert value.endswith(("Z", "+00:00")), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    assert abs(datetime.now(UTC) - parsed) < timedelta(minutes=5), value


def named(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == event]


async def wait_for_event(
    buffer: io.StringIO, event: str, count: int = 1, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Poll the captured lines until ``count`` records named ``event`` exist."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = named(parse(buffer), event)
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.01)


async def read_raw_frames(client: SseClient, count: int) -> list[bytes]:
    """The next ``count`` event blocks exactly as they came off the wire."""
    reader = client._reader
    assert reader is not None
    return [await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) for _ in range(count)]


# --- the stream lifecycle -------------------------------------------------------------------


async def test_stream_open_and_close_are_logged_once_each_with_counts() -> None:
    with captured_logs() as buffer:
        async with running_server() as running:
            first_id = await running.create_consumer(["news"])
            second_id = await running.create_consumer(["news"])

            first = await running.stream(first_id)
            await first.opening()
            second = await running.stream(second_id, headers={"Last-Event-ID": "0"})
            await second.opening()

            for n in range(3):
                await running.publish("news", f"m{n}")
            first_frames = await read_raw_frames(first, 3)
            second_frames = await read_raw_frames(second, 3)
            assert first_frames[0] == b'id: 1\nevent: message\ndata: ["news","m0"]\n\n'

            # One ends by the client hanging up, the other by a DELETE.
            first.close()
            closed = await wait_for_event(buffer, "stream.closed")
            assert [r["consumer_id"] for r in closed] == [first_id]
            deleted = await running.api("DELETE", f"/consumers/{second_id}")
            assert deleted.status == 204
            assert await second.at_eof()
            await wait_for_event(buffer, "stream.closed", count=2)
        records = parse(buffer)

    opened = named(records, "stream.opened")
    assert [r["consumer_id"] for r in opened] == [first_id, second_id]
    assert opened[0]["remote_ip"] == "127.0.0.1"
    assert opened[0]["user_agent"] == "unifrost-tests"
    assert opened[0]["last_event_id"] is None
    assert opened[1]["user_agent"] == "unifrost-tests"
    assert opened[1]["last_event_id"] == 0

    closed = {r["consumer_id"]: r for r in named(records, "stream.closed")}
    assert len(named(records, "stream.closed")) == 2
    assert closed[first_id]["reason"] == "client"
    assert closed[second_id]["reason"] == "consumer_closed"
    for consumer_id, frames in ((first_id, first_frames), (second_id, second_frames)):
        record = closed[consumer_id]
        assert record["messages"] == 3
        assert record["bytes"] == sum(len(frame) for frame in frames)
        assert isinstance(record["duration_s"], int | float)
        assert 0 <= record["duration_s"] < 10


async def test_replayed_messages_count_in_stream_closed() -> None:
    with captured_logs() as buffer:
        async with running_server() as running:
            consumer_id = await running.create_consumer(["news"])
            await running.publish("news", "early-1")
            await running.publish("news", "early-2")
            client = await running.stream(consumer_id)
            await client.opening()
            frames = await read_raw_frames(client, 2)
            assert frames[1] == b'id: 2\nevent: message\ndata: ["news","early-2"]\n\n'
            client.close()
            await wait_for_event(buffer, "stream.closed")
        records = parse(buffer)
    (closed,) = named(records, "stream.closed")
    assert (closed["messages"], closed["bytes"]) == (2, sum(map(len, frames)))
    (opened,) = named(records, "stream.opened")
    assert opened["replayed"] == 2


# --- consumers, subscriptions and control calls ---------------------------------------------


async def test_consumer_lifecycle_and_control_calls_are_logged() -> None:
    with captured_logs() as buffer:
        async with running_server(consumer_ttl=0.3) as running:
            created = await running.api("POST", "/consumers", {"id": "log-c1", "topics": ["a"]})
            assert created.status == 201
            # An open stream keeps log-c1 from its TTL until the DELETE.
            client = await running.stream("log-c1")
            await client.opening()
            changed = await running.api(
                "POST", "/consumers/log-c1/subscriptions", {"add": ["b"], "remove": ["a"]}
            )
            assert changed.status == 200
            assert (await running.api("GET", "/consumers/log-c1")).status == 200
            assert (await running.api("DELETE", "/consumers/log-c1")).status == 204
            assert await client.at_eof()
            assert (await running.api("GET", "/consumers/log-c1")).status == 404
            await running.create_consumer(id="log-c2")
            evicted = await wait_for_event(buffer, "consumer.evicted", count=2)
            assert len(evicted) == 2
        records = parse(buffer)

    assert [r["consumer_id"] for r in named(records, "consumer.created")] == ["log-c1", "log-c2"]
    assert [(r["consumer_id"], r["reason"]) for r in named(records, "consumer.evicted")] == [
        ("log-c1", "deleted"),
        ("log-c2", "ttl"),
    ]
    changes = named(records, "subscription.changed")
    assert [(r["consumer_id"], r["subscriptions"]) for r in changes] == [
        ("log-c1", ["a"]),
        ("log-c1", ["b"]),
    ]
    assert (changes[1]["added"], changes[1]["removed"]) == (["b"], ["a"])

    requests = [(r["method"], r["path"], r["status"]) for r in named(records, "http.request")]
    assert requests == [
        ("POST", "/consumers", 201),
        ("POST", "/consumers/log-c1/subscriptions", 200),
        ("GET", "/consumers/log-c1", 200),
        ("DELETE", "/consumers/log-c1", 204),
        ("GET", "/consumers/log-c1", 404),
        ("POST", "/consumers", 201),
    ]
    for record in named(records, "http.request"):
        assert record["level"] == "info"
        assert record["remote_ip"] == "127.0.0.1"
        assert isinstance(record["duration_ms"], int | float)


async def test_server_start_and_stop_are_logged_in_order() -> None:
    with captured_logs() as buffer:
        async with running_server() as running:
            port = running.server.public_port
        records = parse(buffer)
    events = [r["event"] for r in records]
    started = events.index("server.started")
    assert started < events.index("server.stopping") < events.index("server.stopped")
    assert records[started]["listen"] == f"127.0.0.1:{port}"


# --- stdlib loggers and formats ----------------------------------------------------------


def test_tornado_loggers_use_the_same_json_shape() -> None:
    with captured_logs() as buffer:
        logging.getLogger("tornado.application").error("boom %s", "x")
        logging.getLogger("tornado.access").warning("slow")
        logging.getLogger("tornado.general").debug("hidden at info level")
        records = parse(buffer)
    assert [(r["event"], r["level"]) for r in records] == [
        ("boom x", "error"),
        ("slow", "warning"),
    ]


def test_exceptions_are_rendered_inside_the_json_line() -> None:
    with captured_logs() as buffer:
        try:
            raise ValueError("kaput")
        except ValueError:
            logging.getLogger("tornado.application").exception("handler failed")
        records = parse(buffer)
    (record,) = records
    assert record["event"] == "handler failed"
    assert record["level"] == "error"
    assert "ValueError: kaput" in record["exception"]


def test_log_level_filters_our_events() -> None:
    with captured_logs(level="warning") as buffer:
        get_logger("unifrost.test").info("quiet.event")
        get_logger("unifrost.test").warning("loud.event", detail=1)
        records = parse(buffer)
    assert [(r["event"], r["detail"]) for r in records] == [("loud.event", 1)]


def test_loggers_made_before_a_level_change_follow_it() -> None:
    log = get_logger("unifrost.test")  # as every module does, at import
    with captured_logs(level="warning") as buffer:
        assert not log.is_enabled_for(logging.INFO)
        assert log.is_enabled_for(logging.WARNING)
        log.info("quiet.event")
        log.log(logging.INFO, "quiet.too")
        log.debug("quieter.event")
        try:
            raise ValueError("kaput")
        except ValueError:
            log.exception("failed.event")
        quiet = parse(buffer)
    with captured_logs(level="debug") as buffer:
        assert log.is_enabled_for(logging.DEBUG)
        log.debug("debug.event")
        log.info("info.event")
        loud = parse(buffer)
    assert [(r["event"], r["level"]) for r in quiet] == [("failed.event", "error")]
    assert "ValueError: kaput" in quiet[0]["exception"]
    assert [r["event"] for r in loud] == ["debug.event", "info.event"]


def test_our_level_leaves_structlog_loggers_of_the_application_alone() -> None:
    # An embedding application's own structlog loggers keep their levels.
    application_logger = structlog.make_filtering_bound_logger(logging.DEBUG)(
        structlog.testing.CapturingLogger(), [], {}
    )
    with captured_logs(level="error"):
        application_logger.info("app.event")
    calls = application_logger._logger.calls
    assert [(call.method_name, call.kwargs["event"]) for call in calls] == [("info", "app.event")]


async def test_publishes_below_the_level_are_answered_and_counted_not_logged() -> None:
    with captured_logs(level="warning") as buffer:
        async with running_server() as running:
            await running.publish("quiet-topic", b"payload")
            refused = await running.api("POST", "/publish?topic=", b"payload")
            assert refused.status == 400
            assert (
                await metric(running, "unifrost_http_requests_total", handler="publish", code="202")
                == 1
            )
            assert (
                await metric(running, "unifrost_http_requests_total", handler="publish", code="400")
                == 1
            )
        records = parse(buffer)
    assert named(records, "http.request") == []


def test_console_format_renders_readable_lines() -> None:
    with captured_logs("console") as buffer:
        get_logger("unifrost.test").info("consumer.created", consumer_id="abc123")
        logging.getLogger("tornado.application").error("tornado says hi")
        lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            pass
        else:
            raise AssertionError(f"console line is JSON: {line!r}")
    assert "consumer.created" in lines[0]
    assert "consumer_id=abc123" in lines[0]
    assert "info" in lines[0]
    assert "tornado says hi" in lines[1]
    assert "error" in lines[1]


# --- no credentials -------------------------------------------------------------------------


async def test_admin_token_never_appears_in_logs() -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with captured_logs() as buffer:
        async with running_server(admin_token=TOKEN) as running:
            created = await running.api("POST", "/consumers", {"topics": ["t"]}, headers=auth)
            assert created.status == 201
            consumer_id = created.json()["consumer_id"]
            refused = await running.api("GET", "/consumers", headers={"Authorization": "Bearer x"})
            assert refused.status == 401
            assert (await running.api("GET", f"/consumers/{consumer_id}")).status == 401
            published = await running.api("POST", "/publish?topic=t", "p", headers=auth)
            assert published.status == 202
            assert (await running.api("GET", "/metrics", headers=auth)).status == 200
            client = await running.stream(consumer_id, headers=auth)
            await client.opening()
            client.close()
            await wait_for_event(buffer, "stream.closed")
        records = parse(buffer)
    text = buffer.getvalue()
    assert TOKEN not in text
    assert [r["status"] for r in named(records, "http.request")] == [201, 401, 401, 202]
    assert named(records, "stream.closed")[0]["consumer_id"] == consumer_id


# --- when lines are written ------------------------------------------------------------------


async def test_lines_of_several_loop_iterations_are_written_together() -> None:
    log = get_logger("unifrost.test")
    with captured_logs() as buffer:
        for n in range(3):
            log.info("burst.line", n=n)
            await asyncio.sleep(0)  # the next line comes in a later iteration
        assert buffer.writes == 0  # held for up to FLUSH_DELAY
        # Nothing else is logged: the held lines leave on their own, in one write.
        deadline = asyncio.get_running_loop().time() + 5
        while buffer.writes == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(FLUSH_DELAY / 4)
        assert buffer.writes == 1
        assert [r["n"] for r in parse(buffer)] == [0, 1, 2]


def test_lines_without_a_running_loop_are_written_at_once() -> None:
    with captured_logs() as buffer:
        get_logger("unifrost.test").info("startup.line")
        assert buffer.writes == 1
        assert '"startup.line"' in buffer.written()


async def test_a_busy_iteration_does_not_hold_lines_without_bound() -> None:
    log = get_logger("unifrost.test")
    with captured_logs() as buffer:
        for n in range(1000):
            log.info("flood.line", n=n)
        assert len(buffer.written().splitlines()) >= 750  # most are out before the loop goes on
        await asyncio.sleep(0)
        assert [r["n"] for r in parse(buffer)] == list(range(1000))


async def test_library_records_keep_their_place_among_our_lines() -> None:
    log = get_logger("unifrost.test")
    with captured_logs() as buffer:
        log.info("ours.first")
        logging.getLogger("tornado.application").error("tornado.second")
        log.info("ours.third")
        await asyncio.sleep(0)
        events = [r["event"] for r in parse(buffer)]
    assert events == ["ours.first", "tornado.second", "ours.third"]


async def test_a_line_from_another_thread_comes_after_the_held_lines() -> None:
    log = get_logger("unifrost.test")
    with captured_logs() as buffer:
        log.info("loop.line")
        other = threading.Thread(target=lambda: log.info("thread.line"))
        other.start()
        other.join()
        # Written by the thread, in order, before the loop's iteration ended.
        events = [json.loads(line)["event"] for line in buffer.written().splitlines()]
    assert events == ["loop.line", "thread.line"]


def test_lines_still_held_when_the_process_exits_are_written() -> None:
    # The loop stops before the callback that would write the line runs.
    script = """
import asyncio
from service.log import FLUSH_DELAY, LogOutput, get_logger, log_output, set_log_output
loop = asyncio.new_event_loop()
def last_words():
    get_logger("unifrost.test").info("held.at.exit")
    loop.stop()
loop.call_soon(last_words)
loop.run_forever()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["held.at.exit"]


def test_a_broken_output_does_not_break_the_caller() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("reader went away")

    saved = log_output()
    set_log_output(LogOutput(stream=Broken(), renderer=saved.renderer))
    try:
        get_logger("unifrost.test").info("nowhere.to.go")  # must not raise
    finally:
        set_log_output(saved)
