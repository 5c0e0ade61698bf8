"""The MQTT driver (through aiomqtt): ``mqtt://`` and ``mqtts://`` URLs.

URL: ``mqtt://[user:pass@]host[:port]`` (port 1883; ``mqtts://`` is the same over
TLS verified against the system's CAs, port 8883). The URL takes no path and no
options. Credentials are percent-decoded and handed to the client as its
username and password; :meth:`MqttBroker.describe` shows ``***`` in their place.

What this module owns and the MQTT-specific semantics:

* **One connection per process**, MQTT 5, with a client id of its own
  (``unifrost-<hostname>-<random>``) and a clean start without session expiry:
  the broker keeps no session between connections, and because every service
  instance is a separate client, every instance receives every message
  (fan-out). Nothing is shared between instances.
* **Topic filters.** A topic is an MQTT topic filter: ``+`` matches one level,
  ``#`` the rest (only as the last level); both only as whole levels. Filters
  are validated here with a clear :class:`BrokerError`; publishing to a topic
  with a wildcard is refused. Frames carry each message's actual topic.
* **Subscriptions** are QoS 1, one MQTT subscription per distinct filter, each
  tagged with an MQTT 5 subscription identifier. The message loop (a task)
  hands each message to the subscriptions of the identifiers it carries; the
  broker may send one copy per matching filter or one copy for all of them, and
  dispatching by identifier delivers exactly once per filter in both cases.
  Messages without identifiers (a broker that does not send them) are matched
  against every filter locally. :meth:`MqttBroker.subscribe` returns after the
  SUBACK; a reason code of 0x80 or more (not authorized, ...) raises.
* **Publishing** is QoS 1: it returns once the broker's PUBACK arrived (bounded
  by ``OPERATION_TIMEOUT``); while disconnected it raises
  :class:`BrokerUnavailable` at once instead of queueing in the client.
* **Outages.** When the connection drops, the message loop ends with an
  ``MqttError``: ``_mark_down``, then new connections are tried with
  :class:`Backoff` (exponential, jittered); once one succeeds every filter is
  subscribed again and ``_mark_up`` reports the recovery. A keepalive of 15 s
  finds connections that died without a reset. Messages published during the
  outage are not delivered (clean session).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from service.brokers.backoff import Backoff
from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
    redact_url,
)
from service.config import Settings
from service.log import get_logger, quiet_library_logs

log = get_logger(__name__)

CONNECT_TIMEOUT = 5.0
"""Bound on one connection attempt (TCP, TLS and CONNACK)."""
OPERATION_TIMEOUT = 5.0
"""Bound on a SUBACK, UNSUBACK or PUBACK."""
KEEPALIVE = 15
"""Seconds between pings; a connection silent for 1.5 times this is dead."""
QOS = 1
_MAX_SUBSCRIPTION_ID = 268_435_455  # the largest MQTT variable byte integer
_MAX_TOPIC_BYTES = 65_535


def topic_problem(topic: str, wildcards: bool) -> str | None:
    """Why ``topic`` is not a valid MQTT topic filter (or, without ``wildcards``,
    topic name), or None when it is valid."""
    if not topic:
        return "a topic must not be empty"
    if "\x00" in topic:
        return "a topic must not contain the NUL character"
    if len(topic.encode()) > _MAX_TOPIC_BYTES:
        return f"a topic must not be longer than {_MAX_TOPIC_BYTES} bytes"
    if not wildcards:
        if "+" in topic or "#" in topic:
            return "cannot publish to a topic with a wildcard ('+' or '#')"
        return None
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def check_topic(topic: str, wildcards: bool) -> None:
    """Raises BrokerError naming what is wrong with ``topic``."""
    problem = topic_problem(topic, wildcards)
    if problem is not None:
        raise BrokerError(f"invalid MQTT topic {topic!r}: {problem}")


class _MqttSubscription(CallbackSubscription):
    """One consumer-facing subscription; several may share one MQTT filter."""

    def __init__(
        self, broker: MqttBroker, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            await self.broker._detach(self)


class _Filter:
    """One MQTT subscription: a filter, its identifier and who listens to it."""

    def __init__(self, topic: str, identifier: int) -> None:
        self.topic = topic
        self.identifier = identifier
        self.subs: list[_MqttSubscription] = []


class MqttBroker(Broker):
    """One aiomqtt client shared by every topic of the process."""

    scheme = "mqtt"

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        tls: bool,
    ) -> None:
        super().__init__()
        self.scheme = "mqtts" if tls else "mqtt"
        self._url = url
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.tls = tls
        self.client_id = f"unifrost-{socket.gethostname()}-{secrets.token_hex(4)}"
        self._client: aiomqtt.Client | None = None
        self._filters: dict[str, _Filter] = {}
        self._by_id: dict[int, _Filter] = {}
        self._next_id = 0
        self._lock: asyncio.Lock | None = None  # serialises changes to the filters
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._backoff = Backoff(maximum=5.0)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> MqttBroker:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {redact_url(url)}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid broker URL {redact_url(url)}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"invalid broker URL {redact_url(url)}: needs a host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"invalid broker URL {redact_url(url)}: an MQTT URL takes no path or options"
            )
        tls = scheme == "mqtts"
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(url, parts.hostname, port or (8883 if tls else 1883), username, password, tls)

    def describe(self) -> str:
        return redact_url(self._url)

    # --- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._task is not None:
            return
        self._closing = False
        self._lock = asyncio.Lock()
        quiet_library_logs("mqtt", "aiomqtt", "paho")
        client = await self._open()
        self._client = client
        self._mark_up()
        self._task = asyncio.get_running_loop().create_task(self._run(client))

    async def _open(self) -> aiomqtt.Client:
        """A connected client, or BrokerUnavailable within ``CONNECT_TIMEOUT``."""
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self._password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=KEEPALIVE,
            timeout=OPERATION_TIMEOUT,
            tls_context=ssl.create_default_context() if self.tls else None,
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.__aenter__()
        except (aiomqtt.MqttError, TimeoutError) as exc:
            reason = self._scrub(str(exc) or f"no answer within {CONNECT_TIMEOUT:g}s")
            raise BrokerUnavailable(
                f"cannot connect to the MQTT broker {self.describe()}: {reason}"
            ) from None
        return client

    async def _run(self, client: aiomqtt.Client) -> None:
        """The message loop; on a lost connection, reconnects and resubscribes."""
        while not self._closing:
            try:
                async for message in client.messages:
                    self._dispatch(message)
            except aiomqtt.MqttError as exc:
                reason = self._scrub(str(exc))
            else:  # the iterator never ends by itself; treat it as a loss anyway
                reason = "message stream ended"
            if self._closing:
                return
            self._mark_down(f"connection to the MQTT broker lost ({reason}); reconnecting")
            await self._discard(client)
            client = await self._reconnect()

    async def _reconnect(self) -> aiomqtt.Client:
        while True:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                client = await self._open()
            except BrokerUnavailable as exc:
                self._report_error(str(exc))
                continue
            self._client = client
            try:
                await self._resubscribe(client)
            except BrokerError as exc:
                self._report_error(str(exc))
                await self._discard(client)
                continue
            self._backoff.reset()
            self._mark_up()
            return client

    async def _resubscribe(self, client: aiomqtt.Client) -> None:
        assert self._lock is not None
        async with self._lock:
            for flt in list(self._filters.values()):
                refused = await self._send_subscribe(client, flt)
                if refused is not None:  # this filter alone is over
                    self._drop_filter(flt)
                    for sub in flt.subs:
                        if sub.active:
                            sub.active = False
                            sub.on_error(refused)

    async def _discard(self, client: aiomqtt.Client) -> None:
        """Disconnect ``client`` without waiting long for a broker that may be gone."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.__aexit__(None, None, None), 1.0)

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client = self._client, None
        if client is not None:
            await self._discard(client)
        for flt in self._filters.values():
            for sub in flt.subs:
                sub.active = False
        self._filters.clear()
        self._by_id.clear()
        self._mark_down("the MQTT driver is closed")

    # --- delivery ---------------------------------------------------------------------

    def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        body = _body(message.payload)
        identifiers = _subscription_ids(message)
        if identifiers:
            matching = [self._by_id[i] for i in identifiers if i in self._by_id]
        else:
            matching = [f for f in self._filters.values() if message.topic.matches(f.topic)]
        for flt in matching:
            for sub in list(flt.subs):
                sub.deliver(topic, body)

    # --- subscribe and publish ---------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        check_topic(topic, wildcards=True)
        client = self._require_client()
        assert self._lock is not None
        sub = _MqttSubscription(self, topic, on_message, on_error)
        async with self._lock:
            flt = self._filters.get(topic)
            if flt is not None:  # already subscribed at the broker
                flt.subs.append(sub)
                return sub
            flt = self._new_filter(topic)
            refused = await self._send_subscribe(client, flt)
            if refused is not None:
                self._drop_filter(flt)
                raise BrokerError(refused)
            flt.subs.append(sub)
        return sub

    def _new_filter(self, topic: str) -> _Filter:
        self._next_id = self._next_id % _MAX_SUBSCRIPTION_ID + 1
        while self._next_id in self._by_id:
            self._next_id = self._next_id % _MAX_SUBSCRIPTION_ID + 1
        flt = _Filter(topic, self._next_id)
        self._filters[topic] = flt
        self._by_id[flt.identifier] = flt
        return flt

    def _drop_filter(self, flt: _Filter) -> None:
        if self._filters.get(flt.topic) is flt:
            del self._filters[flt.topic]
        self._by_id.pop(flt.identifier, None)

    async def _send_subscribe(self, client: aiomqtt.Client, flt: _Filter) -> str | None:
        """SUBSCRIBE and wait for the SUBACK: None, or the broker's refusal.

        Raises:
            BrokerUnavailable: no SUBACK (connection lost or broker unresponsive).
        """
        properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        properties.SubscriptionIdentifier = flt.identifier
        try:
            codes = await client.subscribe(
                flt.topic, qos=QOS, properties=properties, timeout=OPERATION_TIMEOUT
            )
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(
                f"MQTT did not confirm the subscription to {flt.topic!r}: {self._scrub(str(exc))}"
            ) from None
        for code in codes:
            value = code.value if hasattr(code, "value") else int(code)
            if value >= 0x80:
                return f"MQTT refused the subscription to {flt.topic!r}: {code}"
        return None

    async def _detach(self, sub: _MqttSubscription) -> None:
        if self._lock is None:
            return
        async with self._lock:
            flt = self._filters.get(sub.topic)
            if flt is None or sub not in flt.subs:
                return
            flt.subs.remove(sub)
            if flt.subs:
                return
            self._drop_filter(flt)
            client = self._client
        if client is not None and self._up:
            # The broker forgets the filter with the connection anyway.
            with contextlib.suppress(Exception):
                await client.unsubscribe(sub.topic, timeout=OPERATION_TIMEOUT)

    async def publish(self, topic: str, body: bytes) -> None:
        check_topic(topic, wildcards=False)
        client = self._require_client()
        try:
            await client.publish(topic, body, qos=QOS, timeout=OPERATION_TIMEOUT)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(
                f"MQTT did not confirm the publish to {topic!r}: {self._scrub(str(exc))}"
            ) from None

    def _require_client(self) -> aiomqtt.Client:
        # No queueing in the client while disconnected: the caller learns now.
        if self._closing or self._task is None:
            raise BrokerUnavailable("the MQTT driver is closed")
        if not self._up or self._client is None:
            raise BrokerUnavailable("not connected to the MQTT broker; reconnecting")
        return self._client

    def _scrub(self, text: str) -> str:
        """``text`` without the password (it should never be in it anyway)."""
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _body(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _subscription_ids(message: aiomqtt.Message) -> list[int]:
    properties = message.properties
    ids = getattr(properties, "SubscriptionIdentifier", None) if properties else None
    if ids is None:
        return []
    return list(ids) if isinstance(ids, list) else [int(ids)]
