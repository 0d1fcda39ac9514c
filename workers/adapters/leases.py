"""Which adjustment-worker replica owns which user partition, kept in the KV bucket
``worker-leases`` with compare-and-set writes.

Each replica announces itself (``member-<id>``, renewed every ttl/3) and holds leases
``partition-<n>`` naming it and an expiry. What to claim, renew and give up is decided by
the pure ``mt5fleet.workers.core.lease_plan.plan``. Every write is a CAS on the revision
read, so two replicas can never both believe they own a partition after the same read. A
replica that dies stops renewing; its leases expire after ``ttl`` and are taken.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from mt5fleet.proto import subjects
from mt5fleet.workers.core.lease_plan import Lease, plan

log = logging.getLogger("mt5fleet.worker.leases")

MEMBER_PREFIX = "member-"


class LeaseKeeper:
    """Applies ``plan()`` to the bucket; returns the partitions this replica now owns."""

    def __init__(self, kv, me: str, *, partitions: int = subjects.ADJUST_PARTITIONS, ttl_ms: int = 10_000) -> None:
        self.kv, self.me, self.partitions, self.ttl_ms = kv, me, partitions, ttl_ms
        self._since_ms = 0          # when this replica's current membership began
        self._announced_ms: int | None = None

    async def step(self, now_ms: int) -> set[int]:
        # The reads, then the writes, each sent together: a step is a few round trips, not
        # one per partition. On a replica starved of CPU (the 1,000-agent soak) one request
        # after another made a step outlast the ttl, and the replica lost and retook its
        # partitions over and over.
        await self._announce(now_ms)   # first: the member count below includes this replica
        read, members = await asyncio.gather(
            asyncio.gather(*(self._read(p) for p in range(self.partitions))), self._members(now_ms))
        leases = dict(enumerate(read))
        decided = plan(self.me, leases, members, self.partitions, now_ms)
        keep = (*decided.renew, *decided.claim)
        written = await asyncio.gather(
            *(self._write(p, leases[p], now_ms + self.ttl_ms) for p in keep),
            *(self._write(p, leases[p], now_ms) for p in decided.release))  # released: expired at once
        return {partition for partition, ok in zip(keep, written, strict=False) if ok}

    async def release_all(self, now_ms: int) -> None:
        """On a clean shutdown: hand everything over now instead of after the ttl."""
        for partition in range(self.partitions):
            lease = await self._read(partition)
            if lease and lease.owner == self.me:
                await self._write(partition, lease, now_ms)
        try:
            await self.kv.delete(MEMBER_PREFIX + self.me)
        except KeyNotFoundError:
            pass

    async def _announce(self, now_ms: int) -> None:
        if self._announced_ms is None or now_ms - self._announced_ms >= self.ttl_ms:
            self._since_ms = now_ms   # new, or back after its membership lapsed
        await self.kv.put(MEMBER_PREFIX + self.me, json.dumps(
            {"expires_ms": now_ms + self.ttl_ms, "since_ms": self._since_ms}).encode())
        self._announced_ms = now_ms

    async def _members(self, now_ms: int) -> int:
        """This replica and the live members that have held their membership for a ttl.
        A replica that just joined, or is back from a lapse (starved of CPU, it renewed
        late), does not shrink the others' share until it has kept renewing for a ttl:
        otherwise a starved replica's partitions went to its peer, came back, lapsed
        again, and two replicas in one busy process traded partitions ~30 times a minute
        (the 1,000-agent soak). A newcomer still claims what is free at once."""
        stable = 0
        for key in await self._member_keys():
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:  # also KeyDeletedError: a replica that left cleanly
                continue
            member = json.loads(entry.value) if entry.value else None
            if member is None or member["expires_ms"] <= now_ms:
                continue
            if key == MEMBER_PREFIX + self.me or member.get("since_ms", 0) <= now_ms - self.ttl_ms:
                stable += 1
        return max(stable, 1)

    async def _member_keys(self) -> list[str]:
        """The member keys, from the stream's per-subject counts. Not ``kv.keys()``: that
        opens an ordered consumer on every call, and at one step a second per replica the
        server piled up ~1,000 consumers within minutes (each lingers until its inactivity
        threshold). One STREAM.INFO request creates nothing."""
        prefix = self.kv._pre  # "$KV.<bucket>." — nats-py keeps no public accessor for it
        # The whole bucket (partitions + members, a few dozen subjects): a wildcard must be a
        # whole token, and "member-<id>" is one token.
        info = await self.kv._js.stream_info(self.kv._stream, subjects_filter=f"{prefix}>")
        keys = (subject[len(prefix):] for subject in (info.state.subjects or {}))
        return [key for key in keys if key.startswith(MEMBER_PREFIX)]

    async def _read(self, partition: int) -> Lease | None:
        try:
            entry = await self.kv.get(subjects.lease_key(partition))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        raw = json.loads(entry.value)
        return Lease(raw["owner"], raw["expires_ms"], entry.revision)

    async def _write(self, partition: int, seen: Lease | None, expires_ms: int) -> bool:
        value = json.dumps({"owner": self.me, "expires_ms": expires_ms}).encode()
        key = subjects.lease_key(partition)
        try:
            if seen is None:
                await self.kv.create(key, value)
            else:
                await self.kv.update(key, value, last=seen.revision)
            return True
        except (KeyWrongLastSequenceError, Exception) as exc:  # another replica wrote first
            log.debug("lease %s not taken: %s", key, exc)
            return False
