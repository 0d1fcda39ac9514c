"""The agent's one MetaTrader5 thread: every terminal call runs there, in order. The
MetaTrader5 package talks to one terminal over one IPC channel and is not safe to call
from several threads; the event loop must never block on it either."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Mt5Thread:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
