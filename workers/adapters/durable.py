"""Pulling from one durable consumer of the JetStream layout (``SIGNALS/adjust-p<n>``,
``TC_EXECUTIONS/execution-feedback``) and re-creating it when it is deleted behind the
worker's back.

A fetch that fails while NATS is connected makes the puller look: a missing consumer is
created again through ``bootstrap.create_missing`` (its stream first, if that is gone too),
as bootstrap defines it, but starting where this process left off: at the first message it
fetched and has not finished (a nak'd signal is not lost with the consumer), else after the
last one it finished, else, knowing nothing, from a few minutes before it began pulling.
A stream recreated from sequence 1 is read from its beginning. Re-reading a little twice is
safe (command ids and decision records make the fan-out idempotent); skipping is not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import NotFoundError, ServiceUnavailableError

from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.errors import describe
from mt5fleet.proto.runtime.follow import FromFirst, FromSequence, FromTime, StartPosition, wall_ms
from mt5fleet.proto.runtime.tasks import within
from mt5fleet.proto.subjects import ConsumerSpec, JetStreamLayout

log = logging.getLogger("mt5fleet.worker.durable")

# Knowing nothing of where the deleted consumer was: re-read from this long before we began.
UNKNOWN_POSITION_LOOKBACK_MS = 300_000
RETRY_DELAY_S = 0.5


def consumer_spec(layout: JetStreamLayout, durable: str) -> ConsumerSpec:
    for spec in layout.consumers:
        if spec.durable == durable:
            return spec
    raise ValueError(f"no durable consumer {durable!r} in the JetStream layout")


class DurablePuller:
    def __init__(self, nc: Any, layout: JetStreamLayout, durable: str, *,
                 on_error: Callable[[], None] = lambda: None,
                 on_recreated: Callable[[str], None] = lambda name: None,
                 clock: Callable[[], float] = time.monotonic, lookback_ms: int = UNKNOWN_POSITION_LOOKBACK_MS) -> None:
        self.nc, self.js, self.layout = nc, nc.jetstream(), layout
        self.spec = consumer_spec(layout, durable)
        self.on_error, self.on_recreated = on_error, on_recreated
        self.clock, self.lookback_ms = clock, lookback_ms
        self.recreated = 0                 # times the consumer was found missing and created again
        self.last_error = ""
        self._subscription: Any = None
        self._unfinished: set[int] = set()  # stream sequences fetched and not yet finished
        self._last_finished = 0
        self._began_ms = wall_ms()
        self._failing_since: float | None = None

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        """Up to ``batch`` messages; [] when none came or pulling failed (then repaired)."""
        try:
            if self._subscription is None:
                self._subscription = await self.js.pull_subscribe_bind(durable=self.spec.durable,
                                                                       stream=self.spec.stream)
            messages = await self._subscription.fetch(batch, timeout=timeout)
        except TimeoutError:  # no message; or, while reconnecting, no answer at all
            if self.nc.is_connected:
                self._working()
                return []
            await self._failed(ConnectionError("NATS connection lost"))
            return []
        except Exception as exc:  # the consumer, its stream or NATS away
            await self._failed(exc)
            return []
        self._working()
        self._unfinished.update(message.metadata.sequence.stream for message in messages)
        return messages

    def finished(self, message: Any) -> None:
        """``message`` was acknowledged or terminated: never to be read again."""
        sequence = message.metadata.sequence.stream
        self._unfinished.discard(sequence)
        self._last_finished = max(self._last_finished, sequence)

    async def close(self) -> None:
        if self._subscription is not None:
            await within(self._subscription.unsubscribe(), timeout=2)
            self._subscription = None

    def problem(self, budget_s: float) -> str | None:
        if self._failing_since is not None and self.clock() - self._failing_since > budget_s:
            return (f"{self.spec.stream}/{self.spec.durable}: pulling has failed for "
                    f"{self.clock() - self._failing_since:.0f} s ({self.last_error})")
        return None

    # ------------------------------------------------------------------ repair
    def _working(self) -> None:
        if self._failing_since is not None:
            log.info("pulling from %s again after %.1f s", self.spec.durable, self.clock() - self._failing_since)
        self._failing_since = None

    async def _failed(self, exc: BaseException) -> None:
        self.on_error()
        text = "no answer (consumer gone?)" if isinstance(exc, ServiceUnavailableError) else describe(exc)
        if self._failing_since is None:
            self._failing_since = self.clock()
            log.warning("pulling from %s/%s failed: %s", self.spec.stream, self.spec.durable, text)
        self.last_error = text
        if self.nc.is_connected:
            try:
                await self._repair()
            except Exception as repair_error:  # e.g. JetStream not ready yet after a restart
                self.last_error = f"{text}; repair: {describe(repair_error)}"
        await asyncio.sleep(RETRY_DELAY_S)

    async def _repair(self) -> None:
        try:
            await self.js.consumer_info(self.spec.stream, self.spec.durable)
            return  # it exists: the failure was something else, the next fetch retries
        except NotFoundError:
            pass
        if (await bootstrap.create_missing(self.js, self.layout, self.spec.stream)).action is bootstrap.Action.CREATED:
            self.on_recreated(self.spec.stream)
        info = await self.js.stream_info(self.spec.stream)
        start = self._resume(info.state.last_seq)
        change = await bootstrap.create_missing(self.js, self.layout, self.spec.durable, start=start)
        if change.action is bootstrap.Action.CREATED:
            self.recreated += 1
            self.on_recreated(self.spec.durable)
            log.warning("re-created the consumer %s from %s (it was deleted)", change.name, start)
        await self.close()  # bind again to the new consumer

    def _resume(self, stream_last: int) -> StartPosition:
        if self._unfinished:
            position: StartPosition = FromSequence(min(self._unfinished))
        elif self._last_finished:
            position = FromSequence(self._last_finished + 1)
        else:
            return FromTime(self._began_ms - self.lookback_ms)
        if position.sequence > stream_last + 1:  # the stream was recreated: all it holds is new
            self._unfinished.clear()
            self._last_finished = 0
            return FromFirst()
        return position
