"""The dashboard's shared cache: computed once, then answered stale while one refresh runs."""

import asyncio

import pytest

from services.dashboard.snapshot import _Cached


async def test_a_stale_value_is_answered_while_one_refresh_runs() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def compute() -> int:
        calls.append(len(calls))
        if len(calls) > 1:
            await release.wait()  # a slow health check
        return len(calls)

    cached = _Cached(ttl_s=0.0)
    assert await cached.get(compute) == 1  # the first reader waits for the value
    assert await cached.get(compute) == 1  # stale: answered at once, one refresh started
    await asyncio.sleep(0)  # the refresh starts
    assert await cached.get(compute) == 1  # the refresh still runs: no second one
    await asyncio.sleep(0)
    assert len(calls) == 2
    release.set()
    await asyncio.sleep(0.01)
    assert await cached.get(compute) == 2


async def test_a_failed_refresh_keeps_the_stale_value(caplog: pytest.LogCaptureFixture) -> None:
    fail = False

    async def compute() -> str:
        if fail:
            raise RuntimeError("host unreachable")
        return "ok"

    cached = _Cached(ttl_s=0.0)
    assert await cached.get(compute) == "ok"
    fail = True
    assert await cached.get(compute) == "ok"
    await asyncio.sleep(0.01)
    assert await cached.get(compute) == "ok"
    assert "a background refresh failed" in caplog.text
