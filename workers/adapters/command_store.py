"""One user's stored commands, read from TC_COMMANDS by direct get (SPEC §7).

The catch-up service reads with this instead of a consumer: a direct get costs the server
nothing after the answer, so 10,000 agents reconnecting at once create no consumer at all.
``next_by_subj`` keeps every read on the one user's subject the service was asked about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from mt5fleet.proto import subjects


@dataclass(frozen=True)
class Stored:
    sequence: int
    data: bytes
    time_ms: int    # when the stream stored it (server clock)


class CommandStore:
    def __init__(self, js: Any, stream: str = subjects.COMMANDS_STREAM) -> None:
        self.js = js
        self.stream = stream

    async def next_from(self, subject: str, sequence: int) -> Stored | None:
        """The first message of ``subject`` at or after ``sequence``; None if there is none."""
        try:
            raw = await self.js.get_msg(self.stream, seq=max(sequence, 1), subject=subject, next=True, direct=True)
        except NotFoundError:
            return None
        return _stored(raw)

    async def last(self, subject: str) -> Stored | None:
        try:
            return _stored(await self.js.get_msg(self.stream, subject=subject, direct=True))
        except NotFoundError:
            return None

    async def first_since(self, subject: str, since_ms: int) -> Stored | None:
        """The first message of ``subject`` stored at or after ``since_ms``.

        Stored times grow with the sequence, so a bisection over sequences finds it in
        about log2(stream length) gets; the usual cases (everything is newer, or nothing
        is) cost one or two."""
        first = await self.next_from(subject, 1)
        if first is None or first.time_ms >= since_ms:
            return first
        last = await self.last(subject)
        if last is None or last.time_ms < since_ms:
            return None
        low, high = first.sequence + 1, last.sequence  # the answer is next_from(low) once low == high
        while low < high:
            mid = (low + high) // 2
            probe = await self.next_from(subject, mid)
            if probe is not None and probe.time_ms < since_ms:
                low = probe.sequence + 1
            else:
                high = mid
        return await self.next_from(subject, low)


def _stored(raw: Any) -> Stored:
    time_ms = int(raw.time.timestamp() * 1000) if raw.time is not None else 0
    return Stored(sequence=raw.seq, data=raw.data or b"", time_ms=time_ms)
