"""What the two Redis drivers share: a command client beside their reading connection.

:class:`~service.brokers.redis_pubsub.RedisBroker` (pub/sub) and
:class:`~service.brokers.redis_streams.RedisStreamsBroker` (Streams) each read on
one dedicated connection of their own and send every other command (publish,
lookups) through a small redis-py client. This base owns that client, opening
it together with the reading connection, the error text without credentials,
how a connection is dropped, and how a publish failure is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError

from service.brokers import redis_config
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.redis_config import RedisConfig

_Opened = TypeVar("_Opened")


class RedisDriver(Broker):
    """A Redis URL's configuration, its command client, and their failures."""

    scheme = "redis"

    def __init__(self, config: RedisConfig) -> None:
        super().__init__()
        self.config = config
        self.scheme = "rediss" if config.tls else "redis"
        self._closing = True  # until connect()
        self._client: Redis | None = None  # every command but the reading connection's

    def describe(self) -> str:
        return redis_config.describe(self.config)

    async def _connect_with(self, open_reader: Callable[[], Awaitable[_Opened]]) -> _Opened:
        """Open the command client and (``open_reader``) the reading connection.

        On any failure everything is closed again; an unreachable server raises
        :class:`BrokerUnavailable`.
        """
        self._closing = False
        self._client = Redis(
            ssl=self.config.tls, **redis_config.connection_args(self.config, self.config.timeout)
        )
        try:
            opened = await open_reader()
            await asyncio.wait_for(self._client.ping(), self.config.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerUnavailable(
                f"cannot connect to {self.describe()}: {self._text(exc)}"
            ) from exc
        except BaseException:
            await self.close()
            raise
        return opened

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self.config.timeout)

    async def _drop(self, conn: Connection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.disconnect(nowait=True), self.config.timeout)

    async def _publish_with(self, topic: str, command: Awaitable[Any]) -> None:
        """Await a publishing command, its failures as :class:`BrokerError`/``Unavailable``."""
        try:
            await asyncio.wait_for(command, self.config.timeout)
        except ResponseError as exc:
            raise BrokerError(f"Redis refused the publish to {topic!r}: {self._text(exc)}") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publish to {topic!r} failed: {self._text(exc)}") from exc

    def _require_client(self) -> Redis:
        if self._closing or self._client is None:
            raise BrokerUnavailable("the Redis driver is closed")
        return self._client

    def _require_up(self) -> Redis:
        # No buffering while disconnected: the caller learns now, not later.
        client = self._require_client()
        if not self._up:
            raise BrokerUnavailable("not connected to Redis; reconnecting")
        return client

    def _text(self, exc: BaseException) -> str:
        return redis_config.error_text(self.config, exc)
