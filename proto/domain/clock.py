"""Time for the agent, injected: the system clock in production, an accelerated clock for
simulated trading weeks. Every timestamp and every periodic sleep goes through one."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...          # unix seconds

    async def sleep(self, seconds: float) -> None: ...   # simulated seconds


def now_ms(clock: Clock) -> int:
    return int(clock.now() * 1000)


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AcceleratedClock:
    """Simulated time running ``factor`` times faster than the wall clock from ``start``."""

    def __init__(self, start: float, factor: float) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.start, self.factor = start, factor
        self._origin = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._origin) * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.factor)


class ManualClock:
    """A clock tests move by hand; sleeping yields to the loop without waiting."""

    def __init__(self, start: float) -> None:
        self.current = start

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0.01)
