"""Stopping asyncio tasks within a bound.

A plain ``task.cancel(); await gather(...)`` can wait forever: nats-py turns a cancelled
``next_msg`` into ``ConnectionClosedError`` when the connection is closing, and a loop
that catches ``Exception`` then simply goes round again. A service that must stop on
SIGTERM cannot rely on every library honouring cancellation, so we cancel again while
waiting and give up on what is still running after the deadline (it is logged).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Iterable
from typing import TypeVar

log = logging.getLogger("mt5fleet.tasks")

T = TypeVar("T")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: how a service's main loop learns to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cancel_and_wait(tasks: Iterable[asyncio.Task], timeout: float = 5.0) -> set[asyncio.Task]:
    """Cancel ``tasks`` and wait for them; returns those still running after ``timeout``."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.5, max(deadline - loop.time(), 0)))
    for task in pending:
        log.warning("task %s did not stop within %.1f s; abandoning it", task.get_name(), timeout)
    return pending


async def within(awaitable: Awaitable[T], timeout: float, default: T | None = None) -> T | None:
    """``awaitable``'s result, or ``default`` when it fails or takes longer than ``timeout``
    (for best-effort clean-up steps such as unsubscribing from a closing connection)."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except Exception as exc:  # TimeoutError included
        log.debug("clean-up step gave up: %r", exc)
        return default
