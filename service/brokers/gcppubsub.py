"""The Google Cloud Pub/Sub driver (google-cloud-pubsub's asyncio clients): ``gcppubsub://`` URLs.

URL: ``gcppubsub://<project-id>[?option=value&...]``. Topics are Pub/Sub topic
ids in that project. Credentials are Google's standard ones (application
default credentials: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the metadata
server); a URL carrying a user or password is refused. With the standard
``PUBSUB_EMULATOR_HOST=host:port`` environment variable set (or the
``emulator_host`` option, which wins), the driver talks plain gRPC to that
emulator without credentials. :meth:`GcpPubSubBroker.describe` shows the
project and the emulator address. Options:

``emulator_host``
    ``host:port`` of a Pub/Sub emulator.
``ack_deadline_seconds``
    ack deadline of the instance's subscriptions, 10-600 (default 10).
``expiration_days``
    how long an idle subscription outlives its instance before Pub/Sub deletes
    it, 1-31 (default 1, Pub/Sub's minimum).
``max_messages``
    most messages per pull, 1-1000 (default 500).
``timeout``
    bound in seconds on every call but the long-polling pull (default 10).
``max_reconnect_wait``
    cap in seconds of the jittered backoff while Pub/Sub is unreachable (default 5).

What this module owns and the Pub/Sub-specific semantics:

* **One subscription per topic per instance: fan-out.** ``subscribe`` creates a
  Pub/Sub subscription of the instance's own, named after it
  (``unifrost-<hostname>-<pid>-<random>-<n>-<topic>``, see
  :mod:`service.brokers.gcppubsub_config`), so every instance receives every
  message published after it subscribed. ``unsubscribe`` and ``close`` delete
  it. Subscriptions are created with the smallest message retention (10
  minutes) and an expiration policy (``expiration_days``), so those of a
  crashed instance disappear by themselves.
* **Topics must exist.** Nothing here creates topics: subscribing to or
  publishing to a missing topic raises :class:`BrokerError` ("no such Pub/Sub
  topic"). Pub/Sub has no wildcards; a topic with ``* ? [ ] > #`` is refused.
* **Receiving.** One long-polling pull loop per subscription. Each batch is
  put in publish-time order, handed to ``on_message(topic, data)`` and then
  acknowledged with one call: ack after fan-out, so a message is
  acknowledged only once the hub has it. A message whose ack is lost (an
  outage right then) is delivered again after the ack deadline.
* **Order.** Messages published here carry the instance's id as ordering key
  and subscriptions enable message ordering, so Pub/Sub keeps the publish
  order of each instance (Pub/Sub allows about 1 MB/s per ordering key).
  Messages published elsewhere keep their order only if they carry an
  ordering key.
* **Bodies** are the message data, byte for byte. An empty body is published
  with an attribute, since Pub/Sub refuses a message with neither data nor
  attributes; attributes are otherwise ignored.
* **Outages.** A call failing for lack of a connection starts a probe; if the
  probe fails too, the broker is marked down and probed again with
  :class:`Backoff`. Once Pub/Sub answers, every subscription is checked and
  created again if the server lost it (an emulator restart), one whose topic
  is gone ends through its ``on_error``, and only then is the broker marked
  up and the pull loops resume. Publishing or subscribing while down raises
  :class:`BrokerUnavailable` at once. Subscriptions that could not be deleted
  while down are deleted after recovery (or expire).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import google.auth
import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from google.pubsub_v1.types import ExpirationPolicy, PubsubMessage, PullResponse, Subscription

from service.brokers.backoff import Backoff
from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
)
from service.brokers.base import Subscription as BrokerSubscription
from service.brokers.gcppubsub_config import (
    PubSubConfig,
    SubscriptionNames,
    check_topic,
    parse_url,
)
from service.config import Settings
from service.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

_ENDPOINT = "pubsub.googleapis.com:443"
_RETENTION_SECONDS = 600  # Pub/Sub's minimum: nobody reads an orphaned subscription
_PULL_WAIT = 20.0  # deadline of one long-polling pull; running out just means "nothing"
_RESTORE_CONCURRENCY = 16
_EMPTY_BODY = {"unifrost-body": "empty"}
# Failures meaning Pub/Sub could not be reached, as opposed to an answer refusing the call.
_UNREACHABLE = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Cancelled,
    OSError,
    TimeoutError,
)


class _PubSubSubscription(CallbackSubscription):
    """One topic's Pub/Sub subscription, owned by this instance, and its pull loop."""

    def __init__(
        self,
        broker: GcpPubSubBroker,
        topic: str,
        path: str,
        on_message: MessageCallback,
        on_error: ErrorCallback,
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker
        self.path = path
        self.task: asyncio.Task[None] | None = None

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            await self.broker._release(self)


class GcpPubSubBroker(Broker):
    """Google Cloud Pub/Sub: a subscription of its own per topic, pulled and acked here."""

    scheme = "gcppubsub"

    def __init__(self, config: PubSubConfig) -> None:
        super().__init__()
        self.config = config
        self.names = SubscriptionNames()
        self._channel: Any = None
        self._subscriber: SubscriberAsyncClient | None = None
        self._publisher: PublisherAsyncClient | None = None
        self._subs: set[_PubSubSubscription] = set()
        self._orphans: set[str] = set()  # subscriptions to delete once reachable
        self._healthy = asyncio.Event()  # pull loops wait on it while Pub/Sub is unreachable
        self._revive_task: asyncio.Task[None] | None = None
        self._closing = True  # until connect()

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> GcpPubSubBroker:
        return cls(parse_url(url))

    def describe(self) -> str:
        emulator = self.config.emulator_host
        return f"gcppubsub://{self.config.project}" + (
            f"?emulator_host={emulator}" if emulator else ""
        )

    # --- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        if not self._closing:
            return
        self._closing = False
        try:
            await self._open_clients()
            await self._probe()
        except (*_UNREACHABLE, GoogleAuthError, BrokerUnavailable) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot connect to {self.describe()}: {_text(exc)}") from exc
        except BaseException:
            await self.close()
            raise
        self._healthy.set()
        self._mark_up()

    async def _open_clients(self) -> None:
        """One gRPC channel for both clients; reconnects inside it stay below our backoff cap."""
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(self.config.max_reconnect_wait * 1000)),
        ]
        if self.config.emulator_host:
            self._channel = grpc.aio.insecure_channel(self.config.emulator_host, options=options)
        else:
            # Application default credentials (GoogleAuthError without any); finding
            # them may ask the metadata server, so not on the event loop.
            credentials, _ = await asyncio.to_thread(
                google.auth.default, default_scopes=SubscriberGrpcAsyncIOTransport.AUTH_SCOPES
            )
            self._channel = SubscriberGrpcAsyncIOTransport.create_channel(
                _ENDPOINT, credentials=credentials, options=options
            )
        self._subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=self._channel)
        )
        self._publisher = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=self._channel)
        )

    async def _probe(self) -> None:
        """One cheap call: any answer but "unreachable" or "unauthenticated" means reachable.

        Raises:
            BrokerUnavailable: no answer, or the credentials were refused.
        """
        publisher = self._require_publisher()
        call = publisher.list_topics(
            request={"project": f"projects/{self.config.project}", "page_size": 1},
            retry=None,
            timeout=self.config.timeout,
        )
        try:
            await self._call("probe", call)
        except gexc.Unauthenticated as exc:
            raise BrokerUnavailable(f"Pub/Sub refused the credentials: {exc.message}") from exc
        except gexc.GoogleAPICallError:
            pass  # answered: reachable (the credentials may only lack topics.list)

    async def close(self) -> None:
        was_up, self._up = self._up, False  # closed on purpose: nobody to tell
        self._closing = True
        self._healthy.set()  # wake waiting pull loops: they see _closing and end
        revive, self._revive_task = self._revive_task, None
        subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.active = False
        tasks = [t for t in (revive, *(s.task for s in subs)) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.timeout)
        paths = [s.path for s in subs] + list(self._orphans)
        self._orphans.clear()
        if was_up and paths and self._subscriber is not None:
            # Deleted in parallel, bounded: what remains expires (expiration_days).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._delete(path) for path in paths)),
                    self.config.timeout,
                )
        channel, self._channel = self._channel, None
        self._subscriber = self._publisher = None
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self.config.timeout)

    def _require_subscriber(self) -> SubscriberAsyncClient:
        if self._closing or self._subscriber is None:
            raise BrokerUnavailable("the Pub/Sub driver is closed")
        return self._subscriber

    def _require_publisher(self) -> PublisherAsyncClient:
        if self._closing or self._publisher is None:
            raise BrokerUnavailable("the Pub/Sub driver is closed")
        return self._publisher

    def _require_up(self) -> None:
        # No buffering while unreachable: the caller learns now, not later.
        if self._closing:
            raise BrokerUnavailable("the Pub/Sub driver is closed")
        if not self._up:
            raise BrokerUnavailable("Pub/Sub is unreachable; reconnecting")

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """Await one Pub/Sub call; a missing connection starts the recovery.

        Raises:
            BrokerUnavailable: Pub/Sub could not be reached.
            GoogleAPICallError: Pub/Sub answered with an error.
        """
        try:
            return await call
        except _UNREACHABLE as exc:
            if self._closing:
                raise BrokerUnavailable("the Pub/Sub driver is closed") from exc
            self._trouble(f"Pub/Sub unreachable: {_text(exc)}")
            raise BrokerUnavailable(f"{what} failed: Pub/Sub unreachable ({_text(exc)})") from exc

    # --- outages ----------------------------------------------------------------------------

    def _trouble(self, reason: str) -> None:
        if not self._was_up:
            return  # still connecting: connect() reports the failure itself
        self._healthy.clear()
        if self._revive_task is None or self._revive_task.done():
            self._revive_task = asyncio.get_running_loop().create_task(self._revive(reason))

    async def _revive(self, reason: str) -> None:
        """Probe until Pub/Sub answers, restore every subscription, then report up."""
        backoff = Backoff(initial=0.1, maximum=self.config.max_reconnect_wait)
        attempt = 0
        while not self._closing:
            if attempt:  # the first probe comes at once: one failed call may be a blip
                await asyncio.sleep(backoff.next_delay())
            attempt += 1
            try:
                await self._probe()
                if not self._up:
                    await self._restore()
                break
            except BrokerUnavailable as exc:
                if self._up:
                    self._mark_down(reason)
                else:
                    self._report_error(f"reconnecting to {self.describe()} failed: {exc}")
        if self._closing:
            return
        self._mark_up()
        self._healthy.set()
        for path in list(self._orphans):
            self._orphans.discard(path)
            asyncio.get_running_loop().create_task(self._delete(path))

    async def _restore(self) -> None:
        """Make sure every subscription still exists on the server (it may have restarted)."""
        limit = asyncio.Semaphore(_RESTORE_CONCURRENCY)

        async def restore(sub: _PubSubSubscription) -> None:
            async with limit:
                if not sub.active:
                    return
                subscriber = self._require_subscriber()
                call = subscriber.get_subscription(
                    subscription=sub.path, retry=None, timeout=self.config.timeout
                )
                try:
                    await self._call(f"checking the subscription to {sub.topic!r}", call)
                except gexc.NotFound:
                    await self._recreate(sub)

        results = await asyncio.gather(
            *(restore(sub) for sub in list(self._subs)), return_exceptions=True
        )
        for result in results:  # every check finished; now the first failure counts
            if isinstance(result, BaseException):
                raise result

    async def _recreate(self, sub: _PubSubSubscription) -> None:
        """Create ``sub``'s subscription again; if its topic is gone, it ends (``on_error``)."""
        try:
            await self._create(sub.topic, sub.path)
        except gexc.NotFound:
            self._fail(sub, f"Pub/Sub topic {sub.topic!r} no longer exists")

    def _fail(self, sub: _PubSubSubscription, message: str) -> None:
        if not sub.active:
            return
        sub.active = False
        self._subs.discard(sub)
        try:
            sub.on_error(message)
        except Exception:
            log.exception("broker.error", topic=sub.topic, error="error callback failed")

    # --- subscribe and receive ----------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> BrokerSubscription:
        check_topic(topic)
        self._require_up()
        path = self.config.subscription_path(self.names.next_id(topic))
        sub = _PubSubSubscription(self, topic, path, on_message, on_error)
        try:
            await self._create(topic, path)
        except gexc.NotFound as exc:
            raise BrokerError(
                f"no such Pub/Sub topic: {topic!r} in project {self.config.project!r}"
            ) from exc
        except gexc.GoogleAPICallError as exc:
            raise BrokerError(
                f"Pub/Sub refused the subscription to {topic!r}: {exc.message}"
            ) from exc
        except asyncio.CancelledError:
            self._orphans.add(path)  # it may have been created after all
            raise
        if self._closing:  # closed while creating: close() did not see it
            self._orphans.add(path)
            raise BrokerUnavailable("the Pub/Sub driver is closed")
        self._subs.add(sub)
        sub.task = asyncio.get_running_loop().create_task(self._pull_loop(sub))
        return sub

    async def _create(self, topic: str, path: str) -> None:
        subscriber = self._require_subscriber()
        call = subscriber.create_subscription(
            request=Subscription(
                name=path,
                topic=self.config.topic_path(topic),
                ack_deadline_seconds=self.config.ack_deadline_seconds,
                message_retention_duration=timedelta(seconds=_RETENTION_SECONDS),
                expiration_policy=ExpirationPolicy(ttl=timedelta(days=self.config.expiration_days)),
                enable_message_ordering=True,
            ),
            retry=None,
            timeout=self.config.timeout,
        )
        # AlreadyExists: an earlier attempt got through; the name is this instance's alone.
        with contextlib.suppress(gexc.AlreadyExists):
            await self._call(f"subscribing to {topic!r}", call)

    async def _pull_loop(self, sub: _PubSubSubscription) -> None:
        backoff = Backoff(initial=0.1, maximum=self.config.max_reconnect_wait)
        while sub.active and not self._closing:
            if not self._healthy.is_set():
                await self._healthy.wait()
                continue
            try:
                await self._pull_once(sub)
                backoff.reset()
            except BrokerUnavailable:
                continue  # the recovery has started; wait for it
            except gexc.NotFound:
                # Gone while Pub/Sub is up (deleted by someone, or a fast emulator restart).
                self._report_error(f"the subscription to {sub.topic!r} vanished; creating it again")
                with contextlib.suppress(BrokerUnavailable):
                    await self._recreate(sub)
            except Exception as exc:
                self._report_error(f"pull from {sub.topic!r} failed: {_text(exc)}")
                await asyncio.sleep(backoff.next_delay())

    async def _pull_once(self, sub: _PubSubSubscription) -> None:
        subscriber = self._require_subscriber()
        call = subscriber.pull(
            request={"subscription": sub.path, "max_messages": self.config.max_messages},
            retry=None,
            timeout=_PULL_WAIT,
        )
        response = await self._call(f"pull from {sub.topic!r}", _idle_is_empty(call))
        received = PullResponse.pb(response).received_messages
        if not received or not sub.active:
            return  # unsubscribed meanwhile: its subscription is being deleted
        # Pub/Sub does not promise order inside one response; publish time restores it.
        ordered = sorted(
            received, key=lambda m: (m.message.publish_time.seconds, m.message.publish_time.nanos)
        )
        for item in ordered:
            sub.deliver(sub.topic, item.message.data)
        await self._call(
            f"ack on {sub.topic!r}",
            subscriber.acknowledge(
                subscription=sub.path,
                ack_ids=[item.ack_id for item in received],
                retry=None,
                timeout=self.config.timeout,
            ),
        )

    async def _release(self, sub: _PubSubSubscription) -> None:
        """End ``sub``'s loop and delete its subscription (later, if Pub/Sub is unreachable)."""
        self._subs.discard(sub)
        task = sub.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._up and not self._closing:
            await self._delete(sub.path)
        elif not self._closing:
            self._orphans.add(sub.path)

    async def _delete(self, path: str) -> None:
        """Delete one subscription; never raises (what stays behind expires by itself)."""
        subscriber = self._subscriber
        if subscriber is None:
            return
        call = subscriber.delete_subscription(
            subscription=path, retry=None, timeout=self.config.timeout
        )
        try:
            await call
        except gexc.NotFound:
            pass
        except (*_UNREACHABLE, gexc.GoogleAPICallError) as exc:
            if not self._closing:
                self._orphans.add(path)
            log.warning(
                "broker.error", broker=self.describe(), error=f"delete failed: {_text(exc)}"
            )

    # --- publish --------------------------------------------------------------------------------

    async def publish(self, topic: str, body: bytes) -> None:
        check_topic(topic)
        self._require_up()
        publisher = self._require_publisher()
        message = PubsubMessage(
            data=body,
            ordering_key=self.names.instance,
            attributes={} if body else _EMPTY_BODY,
        )
        call = publisher.publish(
            topic=self.config.topic_path(topic),
            messages=[message],
            retry=None,
            timeout=self.config.timeout,
        )
        try:
            await self._call(f"publish to {topic!r}", call)
        except gexc.NotFound as exc:
            raise BrokerError(
                f"no such Pub/Sub topic: {topic!r} in project {self.config.project!r}"
            ) from exc
        except gexc.GoogleAPICallError as exc:
            raise BrokerError(f"Pub/Sub refused the publish to {topic!r}: {exc.message}") from exc


async def _idle_is_empty(call: Awaitable[Any]) -> Any:
    """A long-polling pull that ran out of time found nothing: an empty response."""
    try:
        return await call
    except gexc.DeadlineExceeded:
        return PullResponse()


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


__all__: Sequence[str] = ("GcpPubSubBroker", "PubSubConfig", "parse_url")
