"""Leader election over a ``coordination.k8s.io/v1`` Lease, the decision part (pure).

Of N operator replicas exactly one reconciles: the one named in the Lease's
``holderIdentity``. As in client-go's leaderelection, a Lease counts as expired when its
record has not changed for ``leaseDurationSeconds`` *as this process observed it* (its own
monotonic clock), never by comparing ``renewTime`` with the local wall clock: replicas with
skewed clocks still agree. A leader that could not renew for ``renew_deadline_s`` steps down
before anyone else may take over (``renew_deadline_s`` < ``lease_duration_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration_s: float = 15.0   # how long a silent holder keeps the Lease
    renew_every_s: float = 5.0       # how often the holder renews and followers look
    renew_deadline_s: float = 10.0   # the holder steps down after this long without a renewal

    def __post_init__(self) -> None:
        if not 0 < self.renew_every_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("lease timing needs 0 < renew_every < renew_deadline < lease_duration "
                             f"(got {self.renew_every_s}, {self.renew_deadline_s}, {self.lease_duration_s})")

    @classmethod
    def from_duration(cls, lease_duration_s: float, renew_every_s: float) -> LeaseTiming:
        """The deadline halfway between the renewal period and the duration."""
        return cls(lease_duration_s, renew_every_s, (renew_every_s + lease_duration_s) / 2)


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says; ``version`` is its resourceVersion (a change of it, even by a
    renewal of the same holder, proves the holder alive)."""
    holder: str
    version: str
    transitions: int = 0


class Move(Enum):
    TAKE = "take"      # write ourselves in (a free, expired or our own Lease)
    WAIT = "wait"      # someone else holds it, and is alive


@dataclass
class Observer:
    """The last record seen and when (monotonic seconds): the basis of "expired"."""
    record: LeaseRecord | None = None
    seen_at: float = 0.0

    def observe(self, record: LeaseRecord, now: float) -> None:
        if record != self.record:
            self.record, self.seen_at = record, now

    def expired(self, now: float, duration_s: float) -> bool:
        return self.record is None or now - self.seen_at > duration_s


def decide(record: LeaseRecord, me: str, observer: Observer, now: float, timing: LeaseTiming) -> Move:
    observer.observe(record, now)
    if record.holder in ("", me) or observer.expired(now, timing.lease_duration_s):
        return Move.TAKE
    return Move.WAIT
