"""The NATS driver (core NATS through nats-py): ``nats://`` and ``tls://`` URLs.

URL: ``nats://[user:pass@]host[:port][,host[:port]...][?option=value&...]``
(``nats://token@host`` authenticates with a token). ``tls://`` is the same with
TLS required: nats-py upgrades the connection when the server asks for TLS
(verified against the system's CAs), and a server that does not is refused
rather than used in plaintext. The port defaults to 4222. Several servers form
the pool nats-py connects and fails over to; one set of credentials applies to
all of them. Credentials are percent-decoded and handed to nats-py as connect
options, never inside the server URLs, so no nats-py message can carry them;
:meth:`NatsBroker.describe` shows ``***`` in their place. Options (all optional):

``name``
    connection name shown in NATS monitoring (default ``unifrost``).
``connect_timeout``
    bound on :meth:`NatsBroker.connect`, every server tried (default ``5s``).
``timeout``
    bound on the server round trip that confirms a publish or subscribe
    (default ``5s``).
``max_reconnect_wait``
    cap of the jittered exponential reconnect delay (default ``5s``).
``pending_msgs_limit`` / ``pending_bytes_limit``
    per-subscription client buffer between the socket reader and delivery
    (defaults 65536 messages / ``64MiB``).

What this module owns and the NATS-specific semantics:

* **Subscriptions.** One core subscription (``SUB``) per topic. A topic is a
  NATS subject; ``*`` (one token) and ``>`` (the rest, last token only) are
  wildcards, and frames carry each message's actual subject. Core NATS fans
  every message out to every subscription, so nothing more is needed for
  fan-out across service instances. :meth:`NatsBroker.subscribe` returns after
  a PING/PONG round trip: the server handles commands in order, so once the
  PONG is back the interest is registered and any ``-ERR`` about it (a
  permissions violation) has arrived.
* **Subjects are validated here**, with a clear :class:`BrokerError`: no
  whitespace, no empty tokens (``a..b``, ``.a``), ``*``/``>`` only as whole
  tokens, ``>`` only last, and no wildcard at all when publishing. nats-py's
  own checks are not relied upon and a malformed subject never reaches the
  server (whose ``-ERR`` would make nats-py drop the connection).
* **Publishing** is a core ``PUB`` followed by a bounded round trip (``timeout``),
  so a 202 means the server accepted the message and a dead connection surfaces
  as :class:`BrokerUnavailable` instead of a silently growing buffer. While
  disconnected, publish raises at once rather than using nats-py's reconnect
  buffer. A message handed to nats-py just before a connection loss may still
  be sent once the connection returns, although its publish reported failure.
* **Slow consumers.** nats-py queues incoming messages per subscription up to
  the pending limits and drops beyond them, reporting ``SlowConsumerError``.
  Drops are counted and reported once per socket read through
  ``_report_dropped`` (the hub sends ``messages-dropped``). Delivery is a plain
  function call, so the queue only fills when the event loop is starved. If the
  *server* finds this client too slow it closes the connection, which shows as
  an outage (below).
* **Outages.** nats-py reconnects by itself and replays every subscription
  before it reports the reconnect; the delay between attempts comes from
  :class:`Backoff` (exponential, jittered, capped by ``max_reconnect_wait``),
  and attempts go to the least-tried server of the pool (nats-py releases
  without ``reconnect_to_server_handler`` wait a fixed delay instead, drawn
  at random per process between half and all of ``max_reconnect_wait``).
  Disconnect → ``_mark_down``, reconnect → ``_mark_up``, nats-py errors (failed attempts, ...)
  → ``_report_error``. Should nats-py give up on a connection for good (an
  ``-ERR`` that closes it), this driver opens a new one with the same backoff
  and subscribes every topic again. Pings every 15 s (two may go unanswered)
  find connections that died without a reset.
* **Permissions.** A subscription the server refuses raises :class:`BrokerError`
  from ``subscribe`` (or, when refused after a reconnect, ends through
  ``on_error``); a refused publish raises :class:`BrokerError`.

Replay (not yet): core NATS keeps nothing, so a consumer that missed messages
(broker outage, a buffer overflow on our side) can only be re-fed from
JetStream. The planned shape is an opt-in ``jetstream`` option (or a
``nats+jetstream://`` scheme) under which each topic is read through an
ephemeral ordered push consumer on the stream that captures its subjects:
``DeliverPolicy.NEW`` for live delivery, and on demand a second ephemeral
ordered consumer with ``DeliverPolicy.BY_START_TIME`` (from the moment the
consumer's buffer lost data, or the outage began) or ``LAST_PER_SUBJECT`` to
re-feed it, de-duplicated by stream sequence. Ephemeral consumers keep the
fan-out semantics: no durable cursor is shared between instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from service.brokers.backoff import Backoff
from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
)
from service.brokers.nats_config import NatsConfig, check_subject, parse_url
from service.config import Settings

if TYPE_CHECKING:
    from nats.aio.client import Server


DROP_REASON = "slow consumer: the NATS client's pending limit for the subscription was reached"
_PERMISSION_SUB = "permissions violation for subscription to "
_PERMISSION_PUB = "permissions violation for publish to "
# nats-py's own bound on a round trip; ours (``timeout``) is shorter, and by this time
# its pings have long found a dead connection.
_FLUSH_GIVE_UP = 120
# Newer nats-py can delegate the choice and delay of every reconnect attempt.
_HAS_RECONNECT_HANDLER = (
    "reconnect_to_server_handler" in inspect.signature(Client.connect).parameters
)


class _NatsSubscription(CallbackSubscription):
    """One topic's subscription; survives reconnects and a replaced client."""

    def __init__(
        self, broker: NatsBroker, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker
        self.nats_sub: NatsSubscription | None = None
        self.confirmed = False  # the server acknowledged the interest
        self.denied: str | None = None  # the server's refusal, while unconfirmed

    async def receive(self, msg: Msg) -> None:
        """nats-py's callback: runs on the event loop, one message at a time."""
        self.deliver(msg.subject, msg.data)

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            await self.broker._detach(self)


class NatsBroker(Broker):
    """One nats-py connection shared by every topic of the process."""

    scheme = "nats"

    def __init__(self, config: NatsConfig) -> None:
        super().__init__()
        self.config = config
        self.scheme = config.scheme
        self._nc: Client | None = None
        self._closing = False
        self._subs: dict[int, _NatsSubscription] = {}  # by id() of the nats-py subscription
        self._drops: dict[_NatsSubscription, int] = {}
        self._publish_denied: dict[str, int] = {}  # lower-cased subject -> refusal number
        self._refusals = 0
        self._backoff = Backoff(maximum=config.max_reconnect_wait)
        self._lost: asyncio.Future[None] | None = None  # resolves when the connection drops
        self._revive_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._flushes: set[asyncio.Task[None]] = set()  # round trips in flight

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> NatsBroker:
        return cls(parse_url(url))

    def describe(self) -> str:
        auth = "***@" if self.config.has_credentials else ""
        return f"{self.config.scheme}://{auth}{','.join(self.config.hosts)}"

    # --- connection lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None and not self._closing:
            return  # already connected (or reconnecting by itself)
        self._closing = False
        self._nc = await self._open()
        self._connected()

    async def close(self) -> None:
        self._closing = True
        self._up = False  # closed on purpose: nobody to tell
        revive, self._revive_task = self._revive_task, None
        if revive is not None:
            revive.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(revive, self.config.timeout)
        for sub in list(self._subs.values()):
            sub.active = False
        self._subs.clear()
        self._drops.clear()
        nc, self._nc = self._nc, None
        self._connection_lost()
        if nc is not None:
            await self._discard(nc)

    async def _open(self) -> Client:
        """A connected client, or BrokerUnavailable within ``connect_timeout``."""
        nc = Client()
        opening = _Opening()
        connecting = asyncio.ensure_future(nc.connect(**self._client_options(nc, opening)))
        try:
            await asyncio.wait(
                (connecting, opening.refused),
                timeout=self.config.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:  # cancelled: leave no client reconnecting behind
            await self._abandon(nc, connecting)
            raise
        if not connecting.done() or connecting.cancelled() or connecting.exception():
            await self._abandon(nc, connecting)
            reason = opening.reason(connecting, self.config.connect_timeout)
            raise BrokerUnavailable(f"cannot connect to {self.describe()}: {self._scrub(reason)}")
        if self.config.scheme == "tls" and not _tls_required(nc):
            await self._discard(nc)
            raise BrokerUnavailable(
                f"cannot connect to {self.describe()}: the server does not require TLS,"
                " so the connection would not be encrypted (use nats:// for plaintext)"
            )
        return nc

    async def _abandon(self, nc: Client, connecting: asyncio.Future[None]) -> None:
        if not connecting.done():
            # nats-py retries inside connect(); only cancelling stops it.
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        await self._discard(nc)

    def _client_options(self, nc: Client, opening: _Opening) -> dict[str, Any]:
        """nats-py connect options; callbacks ignore every client but the current one."""

        def current(callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
            async def guarded() -> None:
                if nc is self._nc and not self._closing:
                    callback()

            return guarded

        async def on_error(exc: Exception) -> None:
            if nc is self._nc and not self._closing:
                self._on_error(exc)
            else:
                opening.failed(exc)

        options: dict[str, Any] = {
            "servers": self.config.servers,
            "name": self.config.name,
            "user": self.config.user,
            "password": self.config.password,
            "token": self.config.token,
            "error_cb": on_error,
            "disconnected_cb": current(self._on_disconnected),
            "reconnected_cb": current(self._on_reconnected),
            "closed_cb": current(self._on_closed),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # never give up: outages end
            "connect_timeout": min(2.0, self.config.connect_timeout),
            # Spacing of first-connect retries; reconnects use the backoff below.
            "reconnect_time_wait": 0.5,
            "ping_interval": 15,
            "max_outstanding_pings": 2,
        }
        if _HAS_RECONNECT_HANDLER:
            options["reconnect_to_server_handler"] = self._next_server
        else:  # a fixed delay then; random per process, so a fleet does not stampede
            options["reconnect_time_wait"] = self.config.max_reconnect_wait * (
                0.5 + random.random() / 2
            )
        return options

    def _next_server(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server, float]:
        """nats-py's reconnect hook: the least-tried server, after a jittered delay."""
        return min(servers, key=lambda s: s.reconnects), self._backoff.next_delay()

    async def _discard(self, nc: Client) -> None:
        """Close ``nc`` without waiting long for a broker that may be gone."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), self.config.timeout)

    # --- nats-py callbacks ---------------------------------------------------------------

    def _connected(self) -> None:
        self._new_connection()
        self._backoff.reset()
        self._mark_up()

    def _new_connection(self) -> None:
        self._lost = asyncio.get_running_loop().create_future()

    def _connection_lost(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        # Their PONGs will never come (nats-py forgets them on reconnect), and with the
        # reader stopped, cancelling them is safe now.
        for flush in list(self._flushes):
            flush.cancel()

    def _on_disconnected(self) -> None:
        self._connection_lost()
        self._mark_down("connection to the NATS server lost; reconnecting")

    def _on_reconnected(self) -> None:
        # nats-py has replayed every SUB and had them confirmed by now.
        self._connected()

    def _on_closed(self) -> None:
        """nats-py gave up on ``nc`` (a server ``-ERR``): start over on a new client."""
        self._connection_lost()
        self._mark_down("the NATS server closed the connection; reconnecting")
        if self._revive_task is None or self._revive_task.done():
            self._revive_task = asyncio.get_running_loop().create_task(self._revive())

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats_errors.SlowConsumerError):
            self._count_drop(exc.sub)
            return
        message = self._scrub(str(exc) or type(exc).__name__)
        lowered = message.lower()
        # Refusals are reported where they land (the subscribe or publish, or the
        # subscription's on_error), not as connection trouble.
        if _PERMISSION_SUB in lowered:
            self._subscription_refused(lowered.split(_PERMISSION_SUB, 1)[1].strip('"'), message)
        elif _PERMISSION_PUB in lowered:
            self._publish_refused(lowered.split(_PERMISSION_PUB, 1)[1].strip('"'))
        else:
            self._report_error(message)

    def _publish_refused(self, subject: str) -> None:
        self._refusals += 1
        if len(self._publish_denied) > 1024:  # only publishes in flight need the record
            self._publish_denied.clear()
        self._publish_denied[subject] = self._refusals

    def _subscription_refused(self, subject: str, message: str) -> None:
        # The server lower-cases nothing, but nats-py lower-cases the whole -ERR line.
        for sub in [s for s in self._subs.values() if s.topic.lower() == subject]:
            if not sub.confirmed:
                sub.denied = message  # subscribe() raises it
            elif sub.active:  # refused on a reconnect: the subscription is over
                sub.active = False
                self._spawn(self._detach(sub))
                sub.on_error(f"NATS refused the subscription: {message}")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # a strong reference until it is done
        task.add_done_callback(self._background.discard)

    def _count_drop(self, nats_sub: NatsSubscription) -> None:
        sub = self._subs.get(id(nats_sub))
        if sub is None:
            return
        if not self._drops:  # one report per burst: after this socket read is parsed
            asyncio.get_running_loop().call_soon(self._report_drops)
        self._drops[sub] = self._drops.get(sub, 0) + 1

    def _report_drops(self) -> None:
        drops, self._drops = self._drops, {}
        for sub, count in drops.items():
            if sub.active:
                self._report_dropped(sub.topic, count, DROP_REASON)

    async def _revive(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                nc = await self._open()
            except BrokerUnavailable as exc:
                self._report_error(str(exc))
                continue
            if self._closing:
                await self._discard(nc)
                return
            self._nc = nc
            self._new_connection()
            try:
                for sub in [s for s in self._subs.values() if s.active]:
                    await self._attach(nc, sub)
                await self._round_trip(nc, "resubscription")
            except BrokerError as exc:
                self._report_error(str(exc))
                if not nc.is_connected:  # lost again: nats-py's own reconnect takes over
                    return
                await self._discard(nc)  # connected yet unresponsive: try a new client
                continue
            self._connected()
            return

    # --- subscribe and publish ------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        check_subject(topic, wildcards=True)
        nc = self._require_connection()
        sub = _NatsSubscription(self, topic, on_message, on_error)
        try:
            await self._attach(nc, sub)
            await self._round_trip(nc, f"subscription to {topic!r}")
        except BaseException:
            await sub.unsubscribe()
            raise
        if sub.denied is not None:
            await sub.unsubscribe()
            raise BrokerError(f"NATS refused the subscription to {topic!r}: {sub.denied}")
        sub.confirmed = True
        return sub

    async def _attach(self, nc: Client, sub: _NatsSubscription) -> None:
        old = sub.nats_sub
        if old is not None:
            self._subs.pop(id(old), None)
        try:
            sub.nats_sub = await nc.subscribe(
                sub.topic,
                cb=sub.receive,
                pending_msgs_limit=self.config.pending_msgs_limit,
                pending_bytes_limit=self.config.pending_bytes_limit,
            )
        except nats_errors.Error as exc:
            raise self._translate(exc, f"subscription to {sub.topic!r}") from exc
        self._subs[id(sub.nats_sub)] = sub

    async def _detach(self, sub: _NatsSubscription) -> None:
        nats_sub = self._forget(sub)
        if nats_sub is None:
            return
        # Stops delivery at once; the UNSUB may fail on a lost connection, which the
        # server treats as unsubscribed anyway.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nats_sub.unsubscribe(), self.config.timeout)

    def _forget(self, sub: _NatsSubscription) -> NatsSubscription | None:
        nats_sub, sub.nats_sub = sub.nats_sub, None
        if nats_sub is not None:
            self._subs.pop(id(nats_sub), None)
        self._drops.pop(sub, None)
        return nats_sub

    async def publish(self, topic: str, body: bytes) -> None:
        check_subject(topic, wildcards=False)
        nc = self._require_connection()
        refusals = self._refusals
        try:
            await nc.publish(topic, body)
        except nats_errors.MaxPayloadError as exc:
            raise BrokerError(
                f"message of {len(body)} bytes exceeds the NATS server's max_payload"
                f" of {nc.max_payload} bytes"
            ) from exc
        except nats_errors.Error as exc:
            raise self._translate(exc, f"publish to {topic!r}") from exc
        await self._round_trip(nc, f"publish to {topic!r}")
        if self._publish_denied.get(topic.lower(), 0) > refusals:
            raise BrokerError(f"NATS refused the publish to {topic!r} (permissions violation)")

    def _require_connection(self) -> Client:
        # No buffering while disconnected: the caller learns now, not later.
        nc = self._nc
        if self._closing or nc is None:
            raise BrokerUnavailable("the NATS driver is closed")
        if not self._up or not nc.is_connected:
            raise BrokerUnavailable("not connected to NATS; reconnecting")
        return nc

    async def _round_trip(self, nc: Client, what: str) -> None:
        """PING/PONG: returns once the server has processed everything sent before.

        Raises:
            BrokerUnavailable: the connection dropped or the server did not answer
                within ``timeout``.
        """
        # The flush is never cancelled while its connection lives: nats-py would fail
        # on the late PONG of a cancelled flush and stop reading. It is only waited for.
        flush = asyncio.get_running_loop().create_task(nc.flush(timeout=_FLUSH_GIVE_UP))
        self._flushes.add(flush)
        flush.add_done_callback(self._flush_done)
        waiting: set[asyncio.Future[Any]] = {flush}
        if self._lost is not None:
            waiting.add(self._lost)
        await asyncio.wait(
            waiting, timeout=self.config.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not flush.done() or flush.cancelled() or flush.exception() is not None:
            raise BrokerUnavailable(
                f"NATS did not confirm the {what} within {self.config.timeout:g}s"
                " (connection lost or server unresponsive)"
            )

    def _flush_done(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        if not flush.cancelled():
            flush.exception()  # retrieved: its waiter reported the failure

    def _translate(self, exc: nats_errors.Error, what: str) -> BrokerError:
        if isinstance(
            exc,
            nats_errors.ConnectionClosedError
            | nats_errors.ConnectionDrainingError
            | nats_errors.ConnectionReconnectingError
            | nats_errors.OutboundBufferLimitError,
        ):
            return BrokerUnavailable(f"{what} failed: not connected to NATS")
        return BrokerError(f"{what} failed: {self._scrub(str(exc) or type(exc).__name__)}")

    def _scrub(self, text: str) -> str:
        """``text`` without any credential (they should never be in it anyway)."""
        for secret in (self.config.password, self.config.token):
            if secret:
                text = text.replace(secret, "***")
        return text


class _Opening:
    """What happened while a client was connecting (before it is the current one)."""

    def __init__(self) -> None:
        self.last_error: Exception | None = None
        #: Resolves on an error retrying cannot fix, to fail fast.
        self.refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def failed(self, exc: Exception) -> None:
        self.last_error = exc
        text = str(exc).lower()
        if ("authorization" in text or "authentication" in text) and not self.refused.done():
            self.refused.set_result(None)

    def reason(self, connecting: asyncio.Future[None], timeout: float) -> str:
        if not connecting.cancelled() and connecting.exception() is not None:
            return _describe(connecting.exception())
        if self.refused.done():
            return f"the server refused the credentials ({_describe(self.last_error)})"
        last = f" (last error: {_describe(self.last_error)})" if self.last_error else ""
        return f"no server answered within {timeout:g}s{last}"


def _tls_required(nc: Client) -> bool:
    # nats-py encrypts only when the server's INFO says tls_required, whatever the URL
    # scheme; a tls:// URL must not silently fall back to plaintext.
    info = getattr(nc, "_server_info", None)
    return isinstance(info, dict) and bool(info.get("tls_required"))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return str(exc) or type(exc).__name__
