"""Getting the agent's messages into JetStream.

Two paths: *reliable* (account updates, symbol specs, execution reports) goes through the
disk outbox and is drained in order, each publish carrying its Nats-Msg-Id so a retry after
a lost ack is deduplicated by the server; *best effort* (prices, heartbeats) is published
only while connected, quotes waiting in a bounded buffer (newest kept) meanwhile.

A full disk can refuse the outbox's delete after JetStream stored an entry: the entry is
then remembered as stored (``_stored``) and not published again by this process, so a
disk full for longer than a stream's duplicate window still adds no second copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mt5fleet.client.adapters.disk import DiskUnavailable
from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.adapters.outbox import Outbox

log = logging.getLogger("mt5fleet.agent.publisher")

PUBLISH_TIMEOUT_S = 5.0
DRAIN_BATCH = 100

# Called with (kind, msg_id) once JetStream has stored an outbox entry.
StoredCallback = Callable[[str, str], None]


class Publisher:
    def __init__(self, outbox: Outbox, metrics: AgentMetrics, on_stored: StoredCallback | None = None) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.on_stored = on_stored or (lambda kind, msg_id: None)
        self._nc: Any = None
        self._js: Any = None
        self._wake = asyncio.Event()
        self.last_publish_latency_ms = 0.0
        self.last_error: dict[str, str] = {}     # kind -> why its last publish failed ("" once one succeeds)
        self._stored: set[int] = set()           # outbox seqs JetStream stored whose removal the disk refused
        self._progress_at = time.monotonic()     # the last entry stored, or the outbox becoming non-empty

    def attach(self, nc: Any) -> None:
        self._nc, self._js = nc, nc.jetstream()
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def wake(self) -> None:
        """Something may be drainable now (a new entry, or NATS is back)."""
        self._wake.set()

    # -------------------------------------------------------------- reliable path
    def enqueue(self, kind: str, subject: str, msg_id: str, payload: bytes) -> int:
        """Into the outbox; raises ``DiskUnavailable`` when the disk refuses (nothing stored)."""
        was_empty = self.outbox.depth() == 0
        seq = self.outbox.append(subject, msg_id, payload, kind)
        if was_empty:
            self._progress_at = time.monotonic()
        self.metrics.outbox_depth.set(self.outbox.depth())
        self._wake.set()
        return seq

    async def drain_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            sent = await self.drain_once() if self.connected else 0
            if sent and self.outbox.depth() and self.connected:
                continue  # more than one batch waiting; no progress: wait, do not spin
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()

    async def drain_once(self) -> int:
        """Publish pending entries in order; stop at the first failure (order matters)."""
        sent = 0
        for entry in self.outbox.pending(DRAIN_BATCH):
            if entry.seq not in self._stored:
                if not await self._publish(entry.kind, entry.subject, entry.msg_id, entry.payload):
                    break
                self._stored.add(entry.seq)
            try:
                self.on_stored(entry.kind, entry.msg_id)  # the ledger: may be refused by the disk too
                self.outbox.mark_sent(entry.seq)
            except DiskUnavailable as exc:
                log.debug("stored %s %s, but %s; removed later", entry.kind, entry.msg_id, exc)
                break
            self._stored.discard(entry.seq)
            self._progress_at = time.monotonic()
            sent += 1
        self.metrics.outbox_depth.set(self.outbox.depth())
        return sent

    def stalled_for(self, now: float) -> float:
        """Seconds entries have waited with none stored (monotonic ``now``); 0 when empty."""
        return max(now - self._progress_at, 1e-3) if self.outbox.depth() else 0.0

    # -------------------------------------------------------------- best-effort path
    async def publish_now(self, kind: str, subject: str, msg_id: str, payload: bytes) -> bool:
        if not self.connected:
            return False
        return await self._publish(kind, subject, msg_id, payload)

    async def _publish(self, kind: str, subject: str, msg_id: str, payload: bytes) -> bool:
        started = time.perf_counter()
        try:
            await self._js.publish(subject, payload, timeout=PUBLISH_TIMEOUT_S, headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # timeouts, no responders while NATS is away, JetStream errors
            why = f"{type(exc).__name__} {exc}".strip()
            # Said once per new reason: an outbox whose head keeps failing holds everything
            # behind it, and a debug line only would leave that silent.
            (log.debug if self.last_error.get(kind) == why else log.warning)(
                "publish of %s %s failed: %s; it stays in the outbox and is tried again", kind, msg_id, why)
            self.last_error[kind] = why
            return False
        self.last_error[kind] = ""
        elapsed = time.perf_counter() - started
        self.last_publish_latency_ms = elapsed * 1000
        self.metrics.publish_latency.labels(kind).observe(elapsed)
        self.metrics.published.labels(kind).inc()
        return True
