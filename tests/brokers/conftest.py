"""Broker tests drop every SSE stream they opened when they end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.brokers.streams import drop_opened


@pytest.fixture(autouse=True)
async def _drop_streams() -> AsyncIterator[None]:
    yield
    drop_opened()
