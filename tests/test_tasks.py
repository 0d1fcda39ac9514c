"""Stopping services within a bound even when a library swallows cancellation."""

from __future__ import annotations

import asyncio

from mt5fleet.proto.runtime.tasks import cancel_and_wait, within


async def test_a_task_that_turns_cancellation_into_a_retry_is_cancelled_again_until_it_stops():
    attempts = 0

    async def retries_once_on_cancel() -> None:
        nonlocal attempts
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                attempts += 1
                if attempts == 1:  # what nats-py's next_msg does on a closing connection
                    continue
                raise

    task = asyncio.create_task(retries_once_on_cancel())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=3) == set()
    assert task.cancelled() and attempts == 2


async def test_a_task_that_never_stops_is_abandoned_after_the_deadline():
    released = asyncio.Event()

    async def immortal() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await cancel_and_wait([task], timeout=0.6) == {task}
    assert loop.time() - started < 3
    released.set()  # let the event loop close after the test
    await task


async def test_within_returns_the_default_for_a_hang_or_an_error():
    async def hangs() -> int:
        await asyncio.Event().wait()
        return 1

    async def fails() -> int:
        raise RuntimeError("connection closed")

    async def works() -> int:
        return 7

    assert await within(hangs(), 0.1, default=-1) == -1
    assert await within(fails(), 0.1, default=-1) == -1
    assert await within(works(), 0.1) == 7
