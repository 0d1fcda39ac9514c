"""The agent's one MetaTrader5 thread: every terminal call runs there, in order. The
MetaTrader5 package talks to one terminal over one IPC channel and is not safe to call
from several threads; the event loop must never block on it either.

The thread also says how long its current call has been running (``busy_for``): a call
that never returns wedges the agent (every command and price waits behind it), which only
a restart cures, so ``/healthz`` fails on it."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Mt5Thread:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._started: float | None = None  # monotonic start of the call running now

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        # In the caller's context, as asyncio.to_thread does: log lines name the agent's user.
        call = functools.partial(contextvars.copy_context().run, self._timed, function, args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _timed(self, function: Callable[..., Any], args: tuple) -> Any:
        self._started = time.monotonic()
        try:
            return function(*args)
        finally:
            self._started = None

    def busy_for(self, now: float) -> float:
        """Seconds the current call has been running (monotonic ``now``); 0 when idle."""
        started = self._started
        return 0.0 if started is None else max(now - started, 0.0)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
