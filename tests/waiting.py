"""Waiting for something that happens over real I/O (NATS delivery, a subprocess, an HTTP
endpoint): poll until it holds, or fail naming what was awaited.

Time that only has to *pass* (a deadline, a TTL, an expiry) is not waited for: the test
moves a ``ManualClock`` (``mt5fleet.proto.domain.clock``) instead. A fixed ``sleep`` is left
only where a test checks that something does *not* happen.

Import from a test module as ``from waiting import wait_for`` (conftest puts this folder on
``sys.path``; there is no package ``tests``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT_S = 10.0
INTERVAL_S = 0.02

# What was awaited, for the failure message: a string, or a function giving one at the
# timeout (to show the state that was not reached).
What = str | Callable[[], str]


async def eventually(read: Callable[[], T | Awaitable[T]], what: What, timeout: float = TIMEOUT_S, *,
                     until: Callable[[T], Any] = bool, interval: float = INTERVAL_S,
                     retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """The first value of ``read()`` (sync or async) that ``until`` accepts, polled every
    ``interval`` seconds. ``retry_on`` exceptions count as "not yet"; any other propagates.
    After ``timeout`` seconds: AssertionError naming ``what`` (and the last retried error)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = read()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            last_error = exc
        else:
            if until(value):
                return value  # type: ignore[return-value]
        if loop.time() > deadline:
            name = what() if callable(what) else what
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {name}{detail}") from last_error
        await asyncio.sleep(interval)


async def wait_for(predicate: Callable[[], Any], what: What, timeout: float = TIMEOUT_S, *,
                   interval: float = INTERVAL_S) -> None:
    """Until ``predicate()`` (sync or async) is true; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    await eventually(predicate, what, timeout, interval=interval)
