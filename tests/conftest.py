"""Shared fixtures: a running server per test, on fresh loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import Running, running_server


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with running_server() as running:
        yield running
