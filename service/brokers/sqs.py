"""The Amazon SQS driver (aiobotocore): ``sqs://`` URLs.

URL: ``sqs://[access_key_id:secret_access_key@][?option=value&...]``. Without
credentials in the URL, the standard AWS chain applies (environment variables,
shared config files, instance roles), and so does the standard region
(``AWS_REGION`` / ``AWS_DEFAULT_REGION``). Credentials are percent-decoded and
never shown: :meth:`SqsBroker.describe` prints ``***`` in their place. Options:

``endpoint_url``
    another endpoint than AWS's (a local SQS emulator, a VPC endpoint).
``region``
    the AWS region (default: from the environment).
``wait_time_seconds``
    long-poll duration of each receive, 0-20 (default 20).
``max_reconnect_wait``
    cap of the jittered backoff between failed calls (default 5).

What this module owns and the SQS-specific semantics:

* **A topic is a queue name** (1-80 characters of ``A-Z a-z 0-9 _ -``, optionally
  ending in ``.fifo``). Queues are not created here: a missing queue makes
  ``subscribe`` fail with "no such queue". No wildcards.
* **Competing consumers, not fan-out.** SQS hands each message to ONE receiver:
  several service instances subscribed to the same queue share its messages,
  and each message reaches exactly one of them (so the browsers of only one
  instance). For fan-out, publish to an SNS topic and subscribe one queue per
  service instance to it (raw message delivery on), pointing each instance at
  its own queue; the instances then each see every message.
* **Receiving.** One long-polling receive loop per subscribed queue. Each batch
  is handed to ``on_message(queue_name, body)`` and then deleted with one batch
  delete, so a message is deleted only after delivery to the hub (at most once
  to the browsers; a crash between delivery and delete redelivers it after the
  queue's visibility timeout). A batch received after its subscription ended is
  released at once (visibility 0) for the other receivers.
* **Bodies.** SQS bodies are text. A body that is valid UTF-8 made only of
  characters SQS accepts is sent as is (so messages sent by other applications
  arrive as their UTF-8 bytes); any other body, including the empty one, is sent
  base64-encoded with the message attribute ``unifrost-encoding`` saying so, and
  decoded on receipt. Base64 grows a body by a third against the 256 KiB limit.
* **Outages.** A call failing for lack of a connection marks the broker down;
  the receive loops retry with :class:`Backoff` and a probe keeps trying while
  no loop runs. The first call that works again marks it up. Publishing while
  down is tried (bounded) and raises :class:`BrokerUnavailable` when it fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

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
from service.log import get_logger

log = get_logger(__name__)

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
# Characters SQS accepts in a message body (its documented XML-safe set).
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_ENCODING = "unifrost-encoding"
_MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
_CALL_TIMEOUT = 5.0
_OPTIONS = {"endpoint_url", "region", "wait_time_seconds", "max_reconnect_wait"}


@dataclass(frozen=True)
class SqsConfig:
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    wait_time_seconds: int = 20
    max_reconnect_wait: float = 5.0


def parse_url(url: str) -> SqsConfig:
    """Parse an ``sqs://`` URL; errors never contain the secret."""
    parts = urlsplit(url)
    if parts.scheme != "sqs":
        raise ValueError(f"not an sqs:// URL: {parts.scheme}://")
    if parts.hostname or parts.path not in ("", "/"):
        raise ValueError("an sqs:// URL takes no host or path (use endpoint_url=...)")
    options = dict(parse_qsl(parts.query))
    for name in options:
        if name not in _OPTIONS:
            raise ValueError(f"unknown SQS URL option {name!r}")
    wait = int(options.get("wait_time_seconds", "20"))
    if not 0 <= wait <= 20:
        raise ValueError("option wait_time_seconds: must be 0-20")
    cap = float(options.get("max_reconnect_wait", "5"))
    if cap <= 0:
        raise ValueError("option max_reconnect_wait: must be more than zero")
    return SqsConfig(
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region"),
        access_key_id=unquote(parts.username) if parts.username else None,
        secret_access_key=unquote(parts.password) if parts.password else None,
        wait_time_seconds=wait,
        max_reconnect_wait=cap,
    )


def check_queue_name(name: str) -> None:
    if not _QUEUE_NAME.fullmatch(name):
        raise BrokerError(
            f"invalid SQS queue name {name!r}: 1-80 characters of A-Z a-z 0-9 _ -,"
            " optionally ending in .fifo"
        )


def encode_body(body: bytes) -> tuple[str, dict[str, Any]]:
    """The SQS message body and attributes carrying ``body``."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = None
    if text and _SQS_TEXT.fullmatch(text):
        return text, {}
    # Empty bodies are not allowed: "=" stands for it (no base64 string is "=").
    encoded = base64.b64encode(body).decode() or "="
    return encoded, {_ENCODING: {"DataType": "String", "StringValue": "base64"}}


def decode_body(message: dict[str, Any]) -> bytes:
    text: str = message.get("Body", "")
    encoding = message.get("MessageAttributes", {}).get(_ENCODING, {}).get("StringValue")
    if encoding == "base64":
        return b"" if text == "=" else base64.b64decode(text)
    return text.encode()


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, BotoCoreError | OSError | TimeoutError) and not isinstance(
        exc, ClientError
    )


class _SqsSubscription(CallbackSubscription):
    """One queue's receive loop."""

    def __init__(
        self, broker: SqsBroker, queue: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(queue, on_message, on_error)
        self.broker = broker
        self.queue_url = ""
        self.task: asyncio.Task[None] | None = None

    async def unsubscribe(self) -> None:
        # The loop ends after its current poll and releases anything that poll got.
        self.active = False


class SqsBroker(Broker):
    """Amazon SQS: topics are queue names; one receive loop per subscribed queue."""

    scheme = "sqs"

    def __init__(self, config: SqsConfig) -> None:
        super().__init__()
        self.config = config
        self._client: Any = None
        self._client_cm: Any = None
        self._subs: set[_SqsSubscription] = set()
        self._probe: asyncio.Task[None] | None = None
        self._closing = True

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> SqsBroker:
        return cls(parse_url(url))

    def describe(self) -> str:
        creds = "***@" if self.config.access_key_id or self.config.secret_access_key else ""
        endpoint = redact_url(self.config.endpoint_url or "")
        shown = [
            f"{k}={v}" for k, v in (("endpoint_url", endpoint), ("region", self.config.region)) if v
        ]
        return f"sqs://{creds}" + (f"?{'&'.join(shown)}" if shown else "")

    # --- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        self._closing = False
        self._client_cm = get_session().create_client(
            "sqs",
            region_name=self.config.region,
            endpoint_url=self.config.endpoint_url,
            aws_access_key_id=self.config.access_key_id,
            aws_secret_access_key=self.config.secret_access_key,
            config=Config(
                connect_timeout=2,
                read_timeout=self.config.wait_time_seconds + 10,
                retries={"max_attempts": 1},
            ),
        )
        self._client = await self._client_cm.__aenter__()
        try:
            await asyncio.wait_for(self._client.list_queues(MaxResults=1), _CALL_TIMEOUT)
        except ClientError:
            pass  # answered: reachable (the credentials may only lack ListQueues)
        except (BotoCoreError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot connect to {self.describe()}: {_text(exc)}") from exc
        self._mark_up()

    async def close(self) -> None:
        self._closing = True
        subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.active = False
        tasks = [s.task for s in subs if s.task is not None]
        if self._probe is not None:
            tasks.append(self._probe)
            self._probe.cancel()
        if tasks:  # polls in flight end by themselves and release what they got
            _, pending = await asyncio.wait(tasks, timeout=self.config.wait_time_seconds + 2)
            for task in pending:
                task.cancel()
        client_cm, self._client, self._client_cm = self._client_cm, None, None
        if client_cm is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client_cm.__aexit__(None, None, None), _CALL_TIMEOUT)
        self._up = False

    def _require_client(self) -> Any:
        if self._closing or self._client is None:
            raise BrokerUnavailable("the SQS driver is closed")
        return self._client

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        """One SQS call, bounded; tracks broker up/down from its outcome.

        Raises:
            BrokerUnavailable: no connection (the broker is marked down).
            ClientError: SQS answered with an error (the broker is up).
        """
        client = self._require_client()
        try:
            result = await asyncio.wait_for(
                getattr(client, method)(**kwargs),
                _CALL_TIMEOUT + (kwargs.get("WaitTimeSeconds") or 0),
            )
        except ClientError:
            self._mark_up()
            raise
        except (BotoCoreError, OSError, TimeoutError) as exc:
            self._lost(f"SQS unreachable: {_text(exc)}")
            raise BrokerUnavailable(f"{what} failed: SQS unreachable") from exc
        self._mark_up()
        return result

    def _lost(self, reason: str) -> None:
        self._mark_down(reason)
        if not self._closing and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        backoff = Backoff(initial=0.1, maximum=self.config.max_reconnect_wait)
        while not self._closing and not self._up:
            await asyncio.sleep(backoff.next_delay())
            with contextlib.suppress(BrokerError, ClientError):
                await self._call("probe", "list_queues", MaxResults=1)

    # --- subscribe and publish ------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        check_queue_name(topic)
        sub = _SqsSubscription(self, topic, on_message, on_error)
        sub.queue_url = await self._queue_url(topic)
        self._subs.add(sub)
        sub.task = asyncio.get_running_loop().create_task(self._receive_loop(sub))
        return sub

    async def _queue_url(self, queue: str) -> str:
        try:
            result = await self._call(
                f"lookup of queue {queue!r}", "get_queue_url", QueueName=queue
            )
        except ClientError as exc:
            if _code(exc) in _MISSING_QUEUE:
                raise BrokerError(f"no such queue: {queue!r}") from exc
            raise BrokerError(f"lookup of queue {queue!r} failed: {_code(exc)}") from exc
        return str(result["QueueUrl"])

    async def _receive_loop(self, sub: _SqsSubscription) -> None:
        backoff = Backoff(initial=0.1, maximum=self.config.max_reconnect_wait)
        while sub.active and not self._closing:
            try:
                if not sub.queue_url:
                    sub.queue_url = await self._queue_url(sub.topic)
                await self._receive_once(sub)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ClientError) and _code(exc) in _MISSING_QUEUE:
                    sub.queue_url = ""  # gone (recreated?): look it up again
                if not isinstance(exc, BrokerUnavailable):
                    self._report_error(f"receive from {sub.topic!r} failed: {_text(exc)}")
                await asyncio.sleep(backoff.next_delay())
        self._subs.discard(sub)

    async def _receive_once(self, sub: _SqsSubscription) -> None:
        result = await self._call(
            f"receive from {sub.topic!r}",
            "receive_message",
            QueueUrl=sub.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.config.wait_time_seconds,
            MessageAttributeNames=[_ENCODING],
        )
        messages: list[dict[str, Any]] = result.get("Messages", [])
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        if not sub.active:  # unsubscribed during the poll: give them back to other receivers
            await self._call(
                "release",
                "change_message_visibility_batch",
                QueueUrl=sub.queue_url,
                Entries=[{**e, "VisibilityTimeout": 0} for e in entries],
            )
            return
        for message in messages:
            sub.deliver(sub.topic, decode_body(message))
        await self._call(
            f"delete from {sub.topic!r}",
            "delete_message_batch",
            QueueUrl=sub.queue_url,
            Entries=entries,
        )

    async def publish(self, topic: str, body: bytes) -> None:
        check_queue_name(topic)
        text, attributes = encode_body(body)
        kwargs: dict[str, Any] = {"MessageBody": text, "MessageAttributes": attributes}
        if topic.endswith(".fifo"):
            # One group keeps publish order; a fresh id, since each publish is a new message.
            kwargs["MessageGroupId"] = "unifrost"
            kwargs["MessageDeduplicationId"] = uuid.uuid4().hex
        try:
            url = await self._queue_url(topic)
            await self._call(f"publish to {topic!r}", "send_message", QueueUrl=url, **kwargs)
        except ClientError as exc:
            raise BrokerError(f"SQS refused the publish to {topic!r}: {_code(exc)}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
