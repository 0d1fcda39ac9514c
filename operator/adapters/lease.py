"""Leader election on a ``coordination.k8s.io/v1`` Lease through the official client
(synchronous: each call runs in a thread). Optimistic concurrency: a Lease is replaced with
the resourceVersion it was read at, so of two replicas writing themselves in at once one
gets a 409 and stays a follower. The decision is ``core.leadership``'s.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from mt5fleet.operator.core.leadership import LeaseRecord, LeaseTiming, Move, Observer, decide

log = logging.getLogger("mt5fleet.operator.lease")


class LeaseElector:
    def __init__(self, coordination_api: Any, namespace: str, name: str, identity: str,
                 timing: LeaseTiming | None = None, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.api, self.namespace, self.name, self.identity = coordination_api, namespace, name, identity
        self.timing, self.monotonic = timing or LeaseTiming(), monotonic
        self.observer = Observer()
        self.renewed_at: float | None = None   # monotonic time of our last successful write

    # ------------------------------------------------------------------ the loops
    async def acquire(self, stop: asyncio.Event) -> bool:
        """Until this process holds the Lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await self.try_once():
                log.info("leading: Lease %s/%s held by %s", self.namespace, self.name, self.identity)
                return True
            await _wait(stop, self.timing.renew_every_s)
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renews while leading; returns when ``stop`` is set or leadership is lost (a
        renewal refused, or none succeeding within the renew deadline)."""
        while not stop.is_set():
            await _wait(stop, self.timing.renew_every_s)
            if stop.is_set():
                return
            if await self.try_once():
                continue
            if self.renewed_at is None or self.observer.record is not None and \
                    self.observer.record.holder not in ("", self.identity):
                log.error("lost the Lease %s/%s to %s", self.namespace, self.name,
                          self.observer.record.holder if self.observer.record else "?")
                return
            if self.monotonic() - self.renewed_at > self.timing.renew_deadline_s:
                log.error("could not renew the Lease %s/%s for %.0f s: stepping down", self.namespace, self.name,
                          self.timing.renew_deadline_s)
                return

    async def release(self) -> None:
        """Hands the Lease over at once (holder cleared) instead of letting it expire."""
        try:
            lease = await asyncio.to_thread(self.api.read_namespaced_lease, self.name, self.namespace)
            if (lease.spec.holder_identity or "") != self.identity:
                return
            lease.spec.holder_identity = ""
            await asyncio.to_thread(self.api.replace_namespaced_lease, self.name, self.namespace, lease)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # it expires by itself
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, _short(exc))

    # ------------------------------------------------------------------ one step
    async def try_once(self) -> bool:
        """Reads the Lease and, if ``decide`` says so, writes ourselves in. True when we
        hold it now."""
        try:
            return await asyncio.to_thread(self._step)
        except Exception as exc:  # the API server away: not renewed (keep() judges the deadline)
            log.warning("Lease %s/%s: %s", self.namespace, self.name, _short(exc))
            return False

    def _step(self) -> bool:
        now = self.monotonic()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            return self._create(now)
        spec = lease.spec
        record = LeaseRecord(holder=spec.holder_identity or "", version=lease.metadata.resource_version,
                             transitions=spec.lease_transitions or 0)
        if decide(record, self.identity, self.observer, now, self.timing) is Move.WAIT:
            return False
        stamp = _now()
        if record.holder != self.identity:
            spec.acquire_time = stamp
            spec.lease_transitions = record.transitions + 1
        spec.holder_identity = self.identity
        spec.renew_time = stamp
        spec.lease_duration_seconds = max(1, round(self.timing.lease_duration_s))
        # lease.metadata.resource_version is the version read: a write in between is a 409.
        try:
            written = self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return False  # another replica wrote first
            raise
        self._written(written, now)
        return True

    def _create(self, now: float) -> bool:
        import kubernetes

        stamp = _now()
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                                    labels={"app.kubernetes.io/part-of": "mt5fleet"}),
            spec=kubernetes.client.V1LeaseSpec(holder_identity=self.identity, acquire_time=stamp, renew_time=stamp,
                                               lease_duration_seconds=max(1, round(self.timing.lease_duration_s)),
                                               lease_transitions=0))
        try:
            written = self.api.create_namespaced_lease(self.namespace, body)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return False  # created by another replica just now
            raise
        self._written(written, now)
        return True

    def _written(self, lease: Any, now: float) -> None:
        self.observer.observe(LeaseRecord(holder=self.identity, version=lease.metadata.resource_version,
                                          transitions=lease.spec.lease_transitions or 0), now)
        self.renewed_at = now


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _short(exc: Exception) -> str:
    from mt5fleet.operator.adapters.errors import describe

    return describe(exc)
