"""The TTL queue: expiry after the TTL, never before, restarts and stops, one timer."""

from __future__ import annotations

import asyncio

from service.consumers.expiry import COALESCE, ExpiryQueue

TTL = 0.05


async def test_keys_expire_in_deadline_order_after_the_ttl() -> None:
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    queue: ExpiryQueue[str] = ExpiryQueue(TTL, lambda key: expired.append((key, loop.time())))
    armed = {}
    for key in ("a", "b", "c"):
        armed[key] = loop.time()
        queue.arm(key)
        await asyncio.sleep(0.01)
    await asyncio.sleep(TTL + 3 * COALESCE)
    assert [key for key, _ in expired] == ["a", "b", "c"]
    for key, at in expired:
        assert at - armed[key] >= TTL  # never early
        assert at - armed[key] < TTL + COALESCE + 0.05  # and not much late
    assert len(queue) == 0


async def test_disarmed_keys_never_expire_and_rearming_restarts_the_clock() -> None:
    loop = asyncio.get_running_loop()
    expired: dict[str, float] = {}
    queue: ExpiryQueue[str] = ExpiryQueue(TTL, lambda key: expired.setdefault(key, loop.time()))
    queue.arm("gone")
    queue.arm("kept")
    queue.arm("restarted")
    queue.disarm("gone")
    queue.disarm("never armed")  # harmless
    await asyncio.sleep(TTL / 2)
    restarted = loop.time()
    queue.arm("restarted")
    assert "gone" not in queue and "restarted" in queue
    await asyncio.sleep(TTL * 2 + 3 * COALESCE)
    assert set(expired) == {"kept", "restarted"}
    assert expired["restarted"] - restarted >= TTL
    assert expired["restarted"] > expired["kept"]


async def test_a_wave_of_deadlines_takes_few_timer_calls() -> None:
    calls = 0
    expired: list[int] = []
    queue: ExpiryQueue[int] = ExpiryQueue(TTL, expired.append)
    expire = queue._expire

    def counted() -> None:
        nonlocal calls
        calls += 1
        expire()

    queue._expire = counted  # type: ignore[method-assign]
    for key in range(1000):  # a hang-up wave, spread over ~20 ms
        queue.arm(key)
        if key % 100 == 0:
            await asyncio.sleep(0.002)
    await asyncio.sleep(TTL + 0.1)
    assert expired == list(range(1000))
    assert calls <= 5


async def test_close_stops_every_clock() -> None:
    expired: list[str] = []
    queue: ExpiryQueue[str] = ExpiryQueue(TTL, expired.append)
    queue.arm("a")
    queue.close()
    await asyncio.sleep(TTL + 2 * COALESCE)
    assert expired == []
    queue.arm("b")  # usable again
    await asyncio.sleep(TTL + 2 * COALESCE)
    assert expired == ["b"]


async def test_an_expiry_callback_may_arm_again() -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    queue: ExpiryQueue[str] = ExpiryQueue(TTL, lambda key: None)

    def again(key: str) -> None:
        seen.append(loop.time())
        if len(seen) < 3:
            queue.arm(key)

    queue._on_expire = again
    queue.arm("k")
    await asyncio.sleep(3 * TTL + 6 * COALESCE + 0.1)
    assert len(seen) == 3
    assert seen[1] - seen[0] >= TTL and seen[2] - seen[1] >= TTL
