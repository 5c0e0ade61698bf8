"""The shipped nginx configs (deploy/nginx/) in front of a real unifrost server.

Runs Debian's real nginx binary as a child process with its own prefix, on free
loopback ports; the shipped file is included unchanged except for its listen
port, upstream address and certificate paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path

from tests.brokers.local_server import free_port
from tests.support import (
    DEFAULT_TIMEOUT,
    Running,
    SseClient,
    captured_logs,
    parse_response,
    running_server,
    wait_for,
)

NGINX = Path("/usr/sbin/nginx")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
PLAIN = DEPLOY / "unifrost.conf"
TLS = DEPLOY / "unifrost-tls.conf"


def write_config(
    tmp_path: Path,
    shipped: Path,
    upstream_port: int,
    http_extra: str = "",
    cert: tuple[Path, Path] | None = None,
) -> tuple[Path, int]:
    """A main nginx.conf that includes a rewritten copy of ``shipped``; returns (path, port)."""
    port = free_port()
    text = shipped.read_text()
    # Checked before the ports are rewritten: a random port may contain "8081".
    shipped_directives = [line.split("#")[0] for line in text.splitlines()]
    assert not any("8081" in line for line in shipped_directives)  # admin is never proxied
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
    ]:
        text = text.replace(old, new)
    if cert is not None:
        text = text.replace("/etc/ssl/certs/unifrost.crt", str(cert[0]))
        text = text.replace("/etc/ssl/private/unifrost.key", str(cert[1]))
    assert f"127.0.0.1:{port}" in text and f"127.0.0.1:{upstream_port}" in text
    (tmp_path / "conf.d").mkdir(exist_ok=True)
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "conf.d" / shipped.name).write_text(text)
    user = "user root;" if os.geteuid() == 0 else ""
    main = f"""
{user}
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {tmp_path}/client_body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    log_format conn '$connection $server_protocol $status $request_uri';
    access_log {tmp_path}/logs/access.log conn;
    {http_extra}
    include {tmp_path}/conf.d/*.conf;
}}
"""
    path = tmp_path / "nginx.conf"
    path.write_text(main)
    return path, port


def nginx_args(tmp_path: Path, conf: Path) -> list[str]:
    assert NGINX.exists(), f"{NGINX} is missing: run scripts/ensure-nginx.sh"
    return [str(NGINX), "-p", f"{tmp_path}/", "-c", str(conf), "-e", f"{tmp_path}/logs/error.log"]


@contextlib.asynccontextmanager
async def running_nginx(tmp_path: Path, conf: Path, port: int) -> AsyncIterator[None]:
    process = subprocess.Popen(
        nginx_args(tmp_path, conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        async def listening() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_for(listening, timeout=5.0)
        yield
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def proxied(
    tmp_path: Path, http_extra: str = "", **settings: object
) -> AsyncIterator[tuple[Running, tuple[str, int]]]:
    """unifrost behind the plain config; yields (server, nginx address)."""
    async with running_server(**settings) as running:
        conf, port = write_config(tmp_path, PLAIN, running.server.public_port, http_extra)
        async with running_nginx(tmp_path, conf, port):
            yield running, ("127.0.0.1", port)


class ProxiedSse(SseClient):
    """An SSE client for nginx: HTTP/1.0 (so nginx does not re-chunk the body) and
    an optional source address."""

    async def connect(  # type: ignore[override]
        self,
        consumer_id: str | None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> ProxiedSse:
        local = (source, 0) if source else None
        self._reader, self._writer = await asyncio.open_connection(*self.address, local_addr=local)
        lines = [f"GET /events?id={consumer_id} HTTP/1.0", "Host: localhost"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
        response = parse_response(head)
        self.status, self.headers = response.status, response.headers
        return self


async def wait_disconnected(running: Running, consumer_id: str) -> None:
    async def disconnected() -> bool:
        response = await running.api("GET", f"/consumers/{consumer_id}")
        return response.status == 200 and response.json()["connected"] is False

    await wait_for(disconnected)


# --- tests ---------------------------------------------------------------------------------


def test_plain_config_loads_as_an_include(tmp_path: Path) -> None:
    conf, _ = write_config(tmp_path, PLAIN, free_port())
    result = subprocess.run([*nginx_args(tmp_path, conf), "-t"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


async def test_events_pass_through_unbuffered_despite_http_level_gzip(tmp_path: Path) -> None:
    # gzip_http_version 1.0: the test client speaks HTTP/1.0 (no re-chunking).
    gzip = "gzip on; gzip_http_version 1.0; gzip_min_length 0; gzip_types text/event-stream;"
    async with proxied(tmp_path, http_extra=gzip, heartbeat=30.0) as (running, address):
        consumer_id = await running.create_consumer(["news"])
        client = await ProxiedSse(address).connect(consumer_id, {"Accept-Encoding": "gzip"})
        assert client.status == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in client.headers
        await client.opening()
        delays = []
        for i in range(1, 6):
            await asyncio.sleep(0.05)
            sent = time.monotonic()
            await running.publish("news", f"m{i}")
            frame = await client.data_frame(timeout=1.0)
            delays.append(time.monotonic() - sent)
            assert (frame.id, frame.topic, frame.payload) == (str(i), "news", f"m{i}")
        assert max(delays) < 0.1, delays
        client.close()


async def test_last_event_id_passes_through(tmp_path: Path) -> None:
    async with proxied(tmp_path, consumer_ttl=5.0) as (running, address):
        consumer_id = await running.create_consumer(["news"])
        client = await ProxiedSse(address).connect(consumer_id)
        await client.opening()
        for i in range(1, 5):
            await running.publish("news", f"m{i}")
        assert [f.id for f in await client.messages(4)] == ["1", "2", "3", "4"]
        client.close()
        await wait_disconnected(running, consumer_id)

        again = await ProxiedSse(address).connect(consumer_id, {"Last-Event-ID": "2"})
        assert again.status == 200
        await again.opening()
        replay = await again.messages(2)
        assert [(f.id, f.payload) for f in replay] == [("3", "m3"), ("4", "m4")]
        again.close()


async def test_service_logs_the_client_address_not_nginx(tmp_path: Path) -> None:
    # Only nginx (127.0.0.1) is trusted, so 127.0.0.2 can only come from its headers.
    trusted = (IPv4Network("127.0.0.1/32"),)
    with captured_logs() as logs:
        async with proxied(tmp_path, trusted_proxies=trusted) as (running, address):
            consumer_id = await running.create_consumer(["news"])
            client = await ProxiedSse(address).connect(consumer_id, source="127.0.0.2")
            assert client.status == 200
            await client.opening()
            client.close()
    opened = [
        line
        for line in map(json.loads, logs.getvalue().splitlines())
        if line.get("event") == "stream.opened"
    ]
    assert [(line["consumer_id"], line["remote_ip"]) for line in opened] == [
        (consumer_id, "127.0.0.2")
    ]


def make_certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-subj", "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_config_multiplexes_ten_streams_on_one_http2_connection(
    tmp_path: Path,
) -> None:
    count = 10
    async with running_server(consumer_ttl=5.0) as running:
        cert = make_certificate(tmp_path)
        conf, port = write_config(tmp_path, TLS, running.server.public_port, cert=cert)
        check = subprocess.run([*nginx_args(tmp_path, conf), "-t"], capture_output=True)
        assert check.returncode == 0, check.stderr
        async with running_nginx(tmp_path, conf, port):
            ids = [await running.create_consumer([f"t{i}"]) for i in range(count)]
            args = ["curl", "-sk", "--http2", "-Z", "--max-time", "10"]
            args += ["-w", "%{http_version} %{num_connects}\\n"]
            for i, consumer_id in enumerate(ids):
                args += ["-o", str(tmp_path / f"body{i}")]
                args.append(f"https://127.0.0.1:{port}/events?id={consumer_id}")
            curl = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )

            async def all_connected() -> bool:
                for consumer_id in ids:
                    response = await running.api("GET", f"/consumers/{consumer_id}")
                    if response.json()["connected"] is not True:
                        return False
                return True

            await wait_for(all_connected, timeout=5.0)
            for i in range(count):
                await running.publish(f"t{i}", f"hello-{i}")
            await asyncio.sleep(0.2)
            for consumer_id in ids:  # ends each stream, so curl finishes
                assert (await running.api("DELETE", f"/consumers/{consumer_id}")).status == 204
            out, err = await asyncio.wait_for(curl.communicate(), 10)
            assert curl.returncode == 0, err

    results = out.decode().split()
    versions, connects = results[0::2], [int(n) for n in results[1::2]]
    assert versions == ["2"] * count
    assert sum(connects) == 1, connects
    for i in range(count):
        assert f'"hello-{i}"' in (tmp_path / f"body{i}").read_text()
    access = (tmp_path / "logs" / "access.log").read_text().splitlines()
    assert len(access) == count, access
    fields = [line.split() for line in access]
    assert [f[1:3] for f in fields] == [["HTTP/2.0", "200"]] * count, access
    assert len({f[0] for f in fields}) == 1, access  # one client connection in nginx
