"""Which user partitions an adjustment-worker replica should hold, decided from what the
lease bucket shows: pure, so the fairness rules are tested without NATS
(``mt5fleet.workers.adapters.leases`` reads and writes the bucket).

A replica claims free or expired partitions up to a fair share (ceil(partitions /
members)) and gives up what it holds above that share, so a new replica gets work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Lease:
    owner: str
    expires_ms: int
    revision: int = 0

    def live(self, now_ms: int) -> bool:
        return self.expires_ms > now_ms


@dataclass(frozen=True)
class Plan:
    claim: tuple[int, ...]
    renew: tuple[int, ...]
    release: tuple[int, ...]


def plan(me: str, leases: Mapping[int, Lease | None], members: int, partitions: int, now_ms: int) -> Plan:
    """Own at most ceil(partitions / members); take free or expired partitions first."""
    share = math.ceil(partitions / max(members, 1))
    mine = sorted(p for p, lease in leases.items() if lease and lease.owner == me and lease.live(now_ms))
    free = sorted(p for p in range(partitions) if not (leases.get(p) and leases[p].live(now_ms)))
    keep, release = mine[:share], mine[share:]
    claim = free[: max(share - len(keep), 0)]
    return Plan(claim=tuple(claim), renew=tuple(keep), release=tuple(release))
