"""The agent's periodic producers share one loop shape: act, sleep on the agent's clock
(or until woken), repeat until stopped; a failure is logged and the next round tries again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.terminal import TerminalError
from mt5fleet.proto.domain.clock import Clock

log = logging.getLogger("mt5fleet.agent.streams")  # where these loops logged before


async def every(stop: asyncio.Event, seconds: float, action: Callable[[], Awaitable[None]], *, clock: Clock,
                after: Callable[[], None] | None = None, wake: asyncio.Event | None = None) -> None:
    """``after`` runs after each round, failed or not; ``wake`` cuts the sleep short."""
    while not stop.is_set():
        try:
            await action()
        except TerminalError as exc:  # said once by the health check (terminal_disconnected)
            log.debug("%s: terminal unavailable: %s", action.__name__, exc)
        except DiskUnavailable as exc:  # said once by the health check (storage_unwritable)
            log.debug("%s: %s", action.__name__, exc)
        except Exception:
            log.exception("%s failed", action.__name__)
        if after is not None:
            after()
        sleeper = asyncio.ensure_future(clock.sleep(seconds))
        waiters = {sleeper} | ({asyncio.ensure_future(wake.wait())} if wake else set())
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if wake:
            wake.clear()
