"""Reading what was missed after every (re)connect, for as long as it takes.

One catch-up at a time. A failed attempt (the catch-up service away, a timeout, a refused
page) is retried with a backoff capped at ``MAX_WAIT_S`` for as long as the agent runs,
and retried at once when NATS comes back: giving up would silently lose the commands
stored while the agent was away. Nothing is executed twice because of a retry (the
pipeline dedupes by command id) and nothing is skipped (each attempt reads from the same
instant to the present).

It says so once per change of state, not once per attempt: a warning when the catch-up
starts failing (or fails for another reason), an info line when it succeeds again; the
``mt5fleet_agent_catchup_failing`` gauge, the failures counter by reason, the status page
and ``/readyz`` (once failing longer than its budget) show the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mt5fleet.client.adapters.catchup import CatchupFailed, catch_up
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.proto.domain.clock import Clock, now_ms

log = logging.getLogger("mt5fleet.agent.catchup")

FIRST_WAIT_S = 1.0
MAX_WAIT_S = 30.0
# Each wait is drawn from [1 - JITTER, 1 + JITTER] times the back-off: a fleet that lost NATS at
# the same moment does not ask again at the same moments (a synchronised herd kept the
# catch-up service answering requests already given up on).
JITTER = 0.5


@dataclass(frozen=True)
class CatchupStatus:
    state: str            # idle, running, failing or done
    attempts: int         # of the current (or last) catch-up
    error: str            # why the last attempt failed ("" when it did not)
    failing_for_s: float  # 0 unless failing
    since_ms: int         # the instant it reads from (UTC ms)
    done_at_ms: int       # when the last one succeeded (0: never)


class CatchupRunner:
    def __init__(self, *, user_id: str, connection: Callable[[], Any], submit: Callable[[bytes], None],
                 metrics: AgentMetrics, clock: Clock, monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.user_id, self.connection, self.submit = user_id, connection, submit
        self.metrics, self.clock, self._monotonic = metrics, clock, monotonic
        self._rng = rng or random.Random()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._since_ms = 0
        self._attempts = 0
        self._error = ""
        self._failing_since: float | None = None
        self._done_at_ms = 0

    def start(self, since_ms: int) -> None:
        """Catch up from ``since_ms``. One still retrying reads from the earlier of the two
        instants to the present on its next attempt, made now: it covers this one too."""
        if self._task is not None and not self._task.done():
            self._since_ms = min(self._since_ms, since_ms)
            self._wake.set()
            return
        self._since_ms, self._attempts = since_ms, 0
        self._task = asyncio.create_task(self._run(), name=f"{self.user_id}:catchup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def failing_for(self, now: float) -> float:
        return 0.0 if self._failing_since is None else max(now - self._failing_since, 1e-3)

    def status(self, now: float) -> CatchupStatus:
        state = "failing" if self._failing_since is not None else "running" if self.running else (
            "done" if self._done_at_ms else "idle")
        return CatchupStatus(state, self._attempts, self._error, self.failing_for(now), self._since_ms,
                             self._done_at_ms)

    async def _run(self) -> None:
        wait = FIRST_WAIT_S
        while True:
            self._attempts += 1
            self._wake.clear()  # a wake from now on (NATS back) cuts the next wait short
            try:
                read = await self._attempt()
            except CatchupFailed as exc:
                jittered = wait * self._rng.uniform(1 - JITTER, 1 + JITTER)
                self._failed(exc, jittered)
                await self._sleep(jittered)
                wait = min(wait * 2, MAX_WAIT_S)
                continue
            self._succeeded(read)
            return

    async def _attempt(self) -> int:
        try:
            return await catch_up(self.connection(), self.user_id, max(self._since_ms, 0), self.submit)
        except CatchupFailed:
            raise
        except Exception as exc:  # whatever it is, the next attempt may succeed: never stop retrying
            raise CatchupFailed("error", repr(exc)) from exc

    def _failed(self, exc: CatchupFailed, wait: float) -> None:
        self.metrics.catchup_failures.labels(exc.reason).inc()
        new_reason = self._failing_since is None or not self._error.startswith(exc.reason)
        self._error = str(exc)
        if self._failing_since is None:
            self._failing_since = self._monotonic()
            self.metrics.catchup_failing.set(1)
        if new_reason:
            log.warning("catch-up failing (%s); retrying with backoff up to %.0f s for as long as the agent runs",
                        exc, MAX_WAIT_S)
        else:
            log.debug("catch-up attempt %d failed (%s); next in %.0f s", self._attempts, exc, wait)

    def _succeeded(self, read: int) -> None:
        self.metrics.catchup_commands.inc(read)
        self._done_at_ms = now_ms(self.clock)
        if self._failing_since is not None:
            log.info("catch-up succeeded on attempt %d after failing for %.0f s (%d command(s) read)", self._attempts,
                     self._monotonic() - self._failing_since, read)
        self._failing_since, self._error = None, ""
        self.metrics.catchup_failing.set(0)

    async def _sleep(self, seconds: float) -> None:
        """The backoff, cut short when NATS comes back (``start`` wakes it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
