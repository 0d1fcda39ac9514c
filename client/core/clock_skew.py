"""How far the agent's host clock is off, and the time the agent uses instead.

A VPS without NTP drifts; a clock 30 s ahead would make the agent stamp its messages 30 s
in the future (the platform refuses anything more than 5 s ahead) and treat a command as
30 s older than it is (a 60 s command would expire after 30). The broker's trade server
keeps good time, and every fresh tick the terminal shows carries it: the tick was made at
its time (converted to UTC with the measured server offset) and read a little later on the
host clock. So ``host time of the read - tick time`` is the skew plus the tick's age, and
the smallest of the recent ones is the skew plus the shortest age: within about a second.

The agent corrects its clock only when the skew clearly exceeds that uncertainty
(``APPLY_ABOVE_MS``) and stops once it is clearly gone (``RELEASE_BELOW_MS``): a host that
keeps good time is never corrected by the noise of tick ages.

Pure: the caller passes every time; the ``CorrectedClock`` wraps a host ``Clock``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from mt5fleet.proto.domain.clock import Clock

# Fresh ticks kept: with a handful of liquid symbols, the last several seconds of ticks.
WINDOW = 64
MIN_SAMPLES = 3
APPLY_ABOVE_MS = 3_000
RELEASE_BELOW_MS = 1_000


@dataclass(frozen=True)
class Skew:
    """Host clock minus the broker's clock (ms; positive: the host is ahead)."""

    measured_ms: int | None    # None: not measured yet (no fresh tick)
    correction_ms: int         # what the agent subtracts from the host clock now (0: none)
    samples: int
    at_ms: int                 # host time of the latest sample (0: none)


class SkewTracker:
    """Fed with fresh ticks (tick time in UTC, host time of the read). One owner thread."""

    def __init__(self, window: int = WINDOW) -> None:
        self._samples: deque[int] = deque(maxlen=window)
        self._at_ms = 0
        self._correction_ms = 0

    def observe(self, tick_utc_ms: int, host_ms: int) -> bool:
        """One fresh tick; True when the correction in use changed."""
        self._samples.append(host_ms - tick_utc_ms)
        self._at_ms = host_ms
        measured = self.measured_ms()
        if measured is None:
            return False
        before = self._correction_ms
        if not before:
            self._correction_ms = measured if abs(measured) >= APPLY_ABOVE_MS else 0
        elif abs(measured) < RELEASE_BELOW_MS:
            self._correction_ms = 0
        elif abs(measured - before) >= RELEASE_BELOW_MS:  # follow a real change, not the jitter of tick ages
            self._correction_ms = measured
        return self._correction_ms != before

    def measured_ms(self) -> int | None:
        if len(self._samples) < MIN_SAMPLES:
            return None
        return min(self._samples)

    @property
    def correction_ms(self) -> int:
        return self._correction_ms

    def skew(self) -> Skew:
        return Skew(self.measured_ms(), self._correction_ms, len(self._samples), self._at_ms)


class CorrectedClock:
    """The host clock minus the measured skew: the time the agent stamps and judges by.
    Sleeping is the host's: only the reading of the time is corrected."""

    def __init__(self, host: Clock, tracker: SkewTracker) -> None:
        self.host = host
        self.tracker = tracker

    def now(self) -> float:
        return self.host.now() - self.tracker.correction_ms / 1000

    async def sleep(self, seconds: float) -> None:
        await self.host.sleep(seconds)
