"""Chromium, driven through ``driver.mjs`` (playwright-core), plus test pages and a TCP proxy.

The Node process is a thin bridge; every test step and assertion lives in Python.
``scripts/ensure-browser.sh`` installs Debian's chromium and playwright-core;
without them these tests fail (they never skip).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
WAIT = 8.0  # seconds; every browser-side wait is bounded by this unless told


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium page; ``wait()`` polls a JS expression in the page until truthy."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0

    async def call(self, cmd: str, timeout: float = WAIT + 5, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._next += 1
        self.proc.stdin.write((json.dumps({"id": self._next, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise BrowserError(f"the browser driver exited during {cmd}")
        answer = json.loads(line)
        assert answer["id"] == self._next, answer
        if not answer["ok"]:
            console = "" if cmd == "console" else "\n".join(await self.call("console"))
            raise BrowserError(f"{cmd} failed: {answer['error']}\npage console:\n{console}")
        return answer["value"]

    async def open(self, url: str, html: str, app: dict[str, Any] | None = None) -> None:
        """Loads ``html`` as if served at ``url`` (so its origin is ``url``'s)."""
        await self.call("open", url=url, html=html, app=app)

    async def goto(self, url: str) -> None:
        await self.call("goto", url=url)

    async def reload(self) -> None:
        await self.call("reload")

    async def eval(self, expr: str) -> Any:
        return await self.call("eval", expr=expr)

    async def wait(self, expr: str, timeout: float = WAIT) -> Any:
        try:
            return await self.call("wait", timeout=timeout + 5, expr=expr, ms=int(timeout * 1000))
        except BrowserError as exc:
            log = await self.eval("JSON.stringify(window.log || null)")
            raise BrowserError(f"{exc}\nwaited for: {expr}\npage log: {log}") from None

    # --- the test page's record (see page()) ---------------------------------------------

    async def log(self, kind: str | None = None) -> list[dict[str, Any]]:
        where = f".filter(e => e.kind === {json.dumps(kind)})" if kind else ""
        return list(await self.eval(f"window.log{where}"))

    async def messages(self) -> list[tuple[str, str, str | None]]:
        return [(e["topic"], e["payload"], e["id"]) for e in await self.log("message")]

    async def wait_messages(self, count: int, timeout: float = WAIT) -> None:
        await self.wait(f"window.log.filter(e => e.kind === 'message').length >= {count}", timeout)

    async def wait_log(self, kind: str, key: str, value: Any, timeout: float = WAIT) -> None:
        test = f"e.kind === {json.dumps(kind)} && e[{json.dumps(key)}] === {json.dumps(value)}"
        await self.wait(f"window.log.some(e => {test})", timeout)

    async def requests(self) -> list[dict[str, Any]]:
        """Every ``/events`` request the browser made: ``{url, lastEventId}``."""
        return list(await self.call("requests"))


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    node = shutil.which("node")
    assert node, "node is missing: run scripts/ensure-browser.sh"
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/ensure-browser.sh"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), (
        "playwright-core is missing: run scripts/ensure-browser.sh"
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "driver.mjs"),
        cwd=HERE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            assert proc.stderr is not None
            raise BrowserError(f"the browser did not start: {(await proc.stderr.read()).decode()}")
        assert json.loads(line)["ready"] is True
        yield Browser(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await Browser(proc).call("quit", timeout=5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def page(
    base: str = "",
    *,
    consumer_id: str | None = None,
    app_consumer: bool = False,
    topics: list[str] | tuple[str, ...] = (),
    module: bool = False,
) -> str:
    """A page that runs the client and records everything it reports in ``window.log``.

    ``base``: where the service is ('' for the page's own origin). ``app_consumer``:
    consumers come from the page's app backend (``POST /app/consumer``).
    ``topics``: per-topic handlers, recorded as ``{kind: 'topic'}``.
    """
    config = {
        "url": f"{base}/events",
        "consumerId": consumer_id,
        "appConsumer": app_consumer,
        "topics": list(topics),
    }
    setup = f"const config = {json.dumps(config)};\n{_RECORDER}"
    if module:
        load = f'import {{ UnifrostClient }} from "{base}/unifrost.mjs";'
        scripts = f'<script type="module">\n{load}\n{setup}</script>'
    else:
        scripts = f'<script src="{base}/unifrost.js"></script>\n<script>\n{setup}</script>'
    head = '<meta charset="utf-8"><title>test</title>'
    return f"<!doctype html>\n<html><head>{head}</head>\n<body>\n{scripts}\n</body></html>\n"


_RECORDER = """
window.log = [];
const record = (entry) => window.log.push(entry);
const options = { url: config.url, consumerId: config.consumerId };
if (config.appConsumer) {
  options.getConsumer = () => fetch('/app/consumer', { method: 'POST' }).then((r) => r.json());
}
const client = new UnifrostClient(options);
for (const topic of config.topics) {
  client.on(topic, (payload, m) => {
    record({ kind: 'topic', handler: topic, topic: m.topic, payload });
  });
}
client.onMessage((m) => record({ kind: 'message', topic: m.topic, payload: m.payload, id: m.id }));
client.onInfo((i) => record({
  kind: 'info', consumer: i.config.consumer_id, subscriptions: i.subscriptions,
}));
client.onError((e) => record({ kind: 'error', code: e.code, message: e.message }));
client.onClosed((reason) => record({ kind: 'closed', reason }));
client.onState((state) => record({ kind: 'state', state }));
window.client = client;
client.connect();
"""


# --- an app on another origin ------------------------------------------------------------


class _PageHandler(web.RequestHandler):
    def initialize(self, pages: dict[str, str]) -> None:
        self.pages = pages

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.pages["page"])


@contextlib.asynccontextmanager
async def page_server(pages: dict[str, str]) -> AsyncIterator[str]:
    """Serves ``pages["page"]`` (set once known) at ``/`` from a real loopback
    listener; yields its origin.

    (Chromium lets a page reach loopback services only when it is known to be
    served from loopback itself, so a page on another origin needs a real server.)
    """
    server = HTTPServer(web.Application([(r"/", _PageHandler, {"pages": pages})]))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        server.stop()
        await server.close_all_connections()


# --- a TCP proxy that can cut the network ---------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` severs every connection
    and refuses new ones until ``restore()``. Records each request's head."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.refusing = False
        self.refused = 0
        self.heads: list[str] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, record=True),
            self._pipe(up_reader, writer),
            return_exceptions=True,
        )
        self._links -= {writer, up_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool = False
    ) -> None:
        first = True
        try:
            while data := await reader.read(65536):
                if record and first:
                    self.heads.append(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
                first = False
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort() if self.refusing else writer.close()
