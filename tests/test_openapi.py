"""``docs/openapi.yaml`` against a live server.

Schemathesis generates requests for every documented operation (explicit
examples, coverage of edge values and undeclared methods, random valid and
invalid inputs) and checks each answer against the spec: no 5xx, documented
status codes, content types, headers and body schemas, 401 without the token,
405 with ``Allow``. A stateful run then follows the spec's links (create a
consumer, read it, change its subscriptions, open its stream, delete it).
``GET /events`` never ends by itself: schemathesis reads a stream up to its
first event, and a separate test reads a real stream's head and frames and
validates them against the spec too. The file must be valid OpenAPI 3.1, and
every route of both listeners must be documented, on the listener its
``servers`` name.

The number of generated cases is printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection
from schemathesis.core.failures import FailureGroup

from service.app import make_admin_app, make_public_app
from service.config import BufferSettings, ClientSubscriptionSettings
from service.web.router import Router
from tests.support import Running, running_server

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
#: The spec's example server URL of each listener.
ADMIN_SERVER = "http://127.0.0.1:8081"
PUBLIC_SERVER = "http://127.0.0.1:8080"

TOKEN = "openapi-test-token"
ORIGIN = "https://app.example.com"
#: Random cases per operation in the fuzzing phase (coverage and examples come on top).
MAX_EXAMPLES = 50
STATEFUL_SCENARIOS = 20

#: Every optional route on, so every documented operation is reachable.
SERVER_SETTINGS: dict[str, Any] = {
    "admin_token": TOKEN,
    "auto_create_consumers": True,
    "client_subscriptions": ClientSubscriptionSettings(enabled=True, allow=("chat.*", "public/*")),
    "cors_origins": (ORIGIN,),
    "demo": True,
}

schema = schemathesis.openapi.from_path(str(SPEC_PATH))
schema.config.update(request_timeout=5)
# The test sends the token itself; schemathesis still checks that the same
# requests without it are refused with 401.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, database="none", with_security_parameters=False
)
# A stream is read up to its first event (the info frame), then closed.
schema.config.max_stream_events = 1

#: Generated cases per operation, reported when the module ends.
CASES: Counter[str] = Counter()


# --- a live server the synchronous schemathesis client can call -----------------------


class LiveServer:
    """``running_server`` on an event loop of its own, in a background thread."""

    def __init__(self, **changes: Any) -> None:
        self.changes = changes
        self.running: Running | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="openapi-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(15) or self.running is None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_server(**self.changes) as running:
            self.running = running
            self._ready.set()
            await self._stop.wait()

    def forget_consumers(self) -> None:
        """Delete every consumer, so a replayed scenario meets the same server state."""
        assert self._loop is not None and self.running is not None
        manager = self.running.manager

        async def delete_all() -> None:
            ids, _ = manager.page(len(manager) + 1, None)
            for consumer_id in ids:
                manager.delete(consumer_id)

        asyncio.run_coroutine_threadsafe(delete_all(), self._loop).result(10)

    def url(self, spec_server: str) -> str:
        """The live address of the listener a spec ``servers`` URL stands for."""
        assert self.running is not None
        host, port = {ADMIN_SERVER: self.running.admin, PUBLIC_SERVER: self.running.public}[
            spec_server
        ]
        return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    with LiveServer(**SERVER_SETTINGS) as server:
        yield server
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and CASES:
        with capture.global_and_fixture_disabled():  # shown without -s too
            reporter.write_line(
                f"\nopenapi: {sum(CASES.values())} generated cases on {len(CASES)} operations "
                f"({', '.join(f'{label}: {n}' for label, n in sorted(CASES.items()))})"
            )


def listeners(operation: schemathesis.APIOperation) -> list[str]:
    """The spec ``servers`` URLs of an operation's path."""
    return [server["url"] for server in SPEC["paths"][operation.path]["servers"]]


def call_kwargs(live: LiveServer, case: schemathesis.Case, server: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"base_url": live.url(server)}
    if SPEC["paths"][case.operation.path][case.operation.method.lower()].get("security"):
        kwargs["headers"] = {"Authorization": f"Bearer {TOKEN}"}
    return kwargs


# --- the spec against the server ---------------------------------------------------------


def test_the_spec_is_valid_openapi() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises on any problem


def blank_optional_body(case: schemathesis.Case) -> bool:
    """Whitespace where the body is optional: the server reads it as no body (as the
    spec's description of ``POST /consumers`` says), which schemathesis's
    negative-data check would count as accepting invalid JSON."""
    operation = SPEC["paths"][case.operation.path][case.operation.method.lower()]
    optional = not operation.get("requestBody", {}).get("required", True)
    blank = isinstance(case.body, bytes | str) and not case.body.strip()
    return optional and blank and case.media_type == "application/json"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_spec(case: schemathesis.Case, live: LiveServer) -> None:
    excluded = [negative_data_rejection] if blank_optional_body(case) else []
    # /healthz and /readyz are on both listeners: each case goes to both.
    for server in listeners(case.operation):
        case.call_and_validate(**call_kwargs(live, case, server), excluded_checks=excluded)
    CASES[case.operation.label] += 1


def test_a_blank_optional_body_is_read_as_no_body(live: LiveServer) -> None:
    operation = schema["/consumers"]["POST"]
    blank = operation.Case(body=b" \n", media_type="application/json")
    assert blank_optional_body(blank)
    assert blank.call_and_validate(**call_kwargs(live, blank, ADMIN_SERVER)).status_code == 201
    assert not blank_optional_body(operation.Case(body=b"{", media_type="application/json"))
    raw = schema["/publish"]["POST"].Case(body=b" ", media_type="text/plain")
    assert not blank_optional_body(raw)  # not JSON: a message of one space


def test_stateful_sequences_follow_the_links(live: LiveServer) -> None:
    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Hypothesis replays scenarios and requires them to unfold the same
            # way: a custom id taken by an earlier scenario would turn a 201 into
            # a 409 and cut the links short.
            live.forget_consumers()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            (server, *_) = listeners(case.operation)
            return call_kwargs(live, case, server)

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            CASES[f"stateful {case.operation.label}"] += 1

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # Links were followed: created consumers were read, changed, streamed or deleted.
    assert CASES["stateful POST /consumers"] > 0
    linked = (
        "GET /consumers/{consumer_id}",
        "DELETE /consumers/{consumer_id}",
        "POST /consumers/{consumer_id}/subscriptions",
        "GET /events",
    )
    assert sum(CASES[f"stateful {label}"] for label in linked) > 0


# --- the stream, read as a client reads it ----------------------------------------------


async def test_a_real_stream_matches_the_spec() -> None:
    """Head, info frame, resume-gap error, topic messages and the closed frame."""
    small = BufferSettings(max_messages=2, max_bytes=1024 * 1024)
    async with running_server(buffer=small, cors_origins=(ORIGIN,)) as running:
        consumer_id = await running.create_consumer(["news"])
        for n in range(1, 5):  # 1 and 2 fall out of the two-message buffer
            await running.publish("news", f"story {n}")
        reader, writer = await asyncio.open_connection(*running.public)
        url = f"http://{running.public[0]}:{running.public[1]}/events?id={consumer_id}"
        writer.write(
            f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n"
            f"Last-Event-ID: 0\r\nOrigin: {ORIGIN}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        body = b""
        while body.count(b"\n\n") < 5:  # retry, info, resume-gap, 3, 4
            body += await asyncio.wait_for(reader.read(65536), 5)
        await running.publish("news", "story 5")
        assert (await running.api("DELETE", f"/consumers/{consumer_id}")).status == 204
        body += await asyncio.wait_for(reader.read(), 5)  # up to the end of the stream
        writer.close()

    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip(), []).append(value.strip())
    response = schemathesis.Response(
        status_code=status,
        headers=headers,
        content=body,
        request=requests.Request("GET", url, headers={"Last-Event-ID": "0"}).prepare(),
        elapsed=0.1,
        verify=True,
    )
    case = schema["/events"]["GET"].Case(
        query={"id": consumer_id}, headers={"Last-Event-ID": "0", "Origin": ORIGIN}
    )
    case.validate_response(response)
    # What was validated: every kind of frame, in order.
    frames = [block for block in body.decode().split("\n\n") if block]
    assert frames[0] == "retry: 3000"
    assert '["/unifrost/info",' in frames[1]
    assert '\\"resume-gap\\"' in frames[2]
    assert [f.split("\n")[0] for f in frames[3:6]] == ["id: 3", "id: 4", "id: 5"]
    assert frames[6] == 'event: message\ndata: ["/unifrost/closed","consumer closed"]'


async def test_a_frame_outside_the_spec_is_caught() -> None:
    """The stream validation above can fail: a frame the spec does not allow."""
    case = schema["/events"]["GET"].Case(query={"id": "c"})
    bad = b'event: message\ndata: ["/unifrost/closed","gone fishing"]\n\n'
    response = schemathesis.Response(
        status_code=200,
        headers={
            "Content-Type": ["text/event-stream; charset=utf-8"],
            "Cache-Control": ["no-cache"],
            "X-Accel-Buffering": ["no"],
        },
        content=bad,
        request=requests.Request("GET", "http://127.0.0.1:1/events?id=c").prepare(),
        elapsed=0.1,
        verify=True,
    )
    with pytest.raises(FailureGroup):
        case.validate_response(response)


# --- every route is documented -----------------------------------------------------------


def route_patterns(live: LiveServer) -> dict[str, list[str]]:
    """The route regexes each listener serves, with every optional route on."""
    assert live.running is not None and live.running.server.ctx is not None
    ctx = live.running.server.ctx
    return {
        ADMIN_SERVER: served_routes(make_admin_app(ctx)),
        PUBLIC_SERVER: served_routes(make_public_app(ctx)),
    }


def served_routes(router: Router) -> list[str]:
    """The application's route regexes and those answered before its routing."""
    rules = [rule.matcher.regex.pattern for rule in router.app.wildcard_router.rules]
    return rules + [re.escape(path) + "$" for _method, path in router.routes]


def sample_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "c1", template)


def test_every_route_is_documented_on_its_listener(live: LiveServer) -> None:
    patterns = route_patterns(live)
    documented = {
        server: [
            sample_path(path)
            for path, item in SPEC["paths"].items()
            if server in [s["url"] for s in item["servers"]]
        ]
        for server in patterns
    }
    for server, regexes in patterns.items():
        for regex in regexes:
            assert any(re.fullmatch(regex, path) for path in documented[server]), (
                f"route {regex} of {server} is not in docs/openapi.yaml"
            )
        for path in documented[server]:
            assert any(re.fullmatch(regex, path) for regex in regexes), (
                f"{path} is documented on {server} but not served there"
            )
    # The client is served under three names; each is documented.
    for name in ("/unifrost.js", "/unifrost.mjs", "/unifrost.d.ts"):
        assert name in SPEC["paths"]
