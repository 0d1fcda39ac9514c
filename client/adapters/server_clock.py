"""The terminal's server-time offset in use (``core.server_time``), fed by every tick the
agent reads and kept in one small JSON file of the agent's data folder, so a restart over
the weekend, when no tick can be measured, keeps the last known offset.

The same fresh ticks measure how far the host clock is off the broker's (``core.clock_skew``):
``now_ms`` here is the host's own clock, never the corrected one, which is derived from it."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from mt5fleet.client.core.clock_skew import SkewTracker
from mt5fleet.client.core.server_time import OffsetTracker, Rule, ServerOffset, Source

log = logging.getLogger("mt5fleet.agent.server_time")

# A tick newer than the previous look's is at most the time between the two looks old: only
# looks this close together bound the tick's age tightly enough to measure the host's skew.
SKEW_LOOK_WINDOW_MS = 5_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ServerClock:
    """UTC in, server time out and back, for one terminal. Used on the agent's MT5 thread."""

    def __init__(self, path: Path | None = None, *, now_ms: Callable[[], int] = _wall_ms) -> None:
        self._path = path
        self._now_ms = now_ms
        self._server = ""
        self._tracker = OffsetTracker(now_ms=now_ms())
        self.skew = SkewTracker()
        self._looks: dict[str, tuple[int, int]] = {}  # symbol -> (newest tick time, host time of that look)
        self._restore()

    @property
    def offset(self) -> ServerOffset:
        return self._tracker.offset

    def offset_s(self) -> int:
        """The offset now, for the status page and the metrics."""
        return self.offset.offset_at(self._now_ms())

    def to_utc_ms(self, server_ms: int) -> int:
        return self.offset.to_utc_ms(server_ms)

    def to_server_s(self, utc_s: float) -> int:
        return self.offset.to_server_ms(int(utc_s * 1000)) // 1000

    def observe(self, symbol: str, tick_ms: int) -> None:
        """A tick just read: a fresh one measures the offset."""
        host_ms = self._now_ms()
        if self._tracker.observe(symbol, tick_ms, host_ms):
            log.info("MT5 server time of %s is %s", self._server or "the terminal", self.offset.label(host_ms))
            self._save()
        self._measure_skew(symbol, tick_ms, host_ms)

    def _measure_skew(self, symbol: str, tick_ms: int, host_ms: int) -> None:
        """A tick newer than the previous look's, read soon after it, is at most that old."""
        previous = self._looks.get(symbol)
        self._looks[symbol] = (max(tick_ms, previous[0]) if previous else tick_ms, host_ms)
        if previous is None or tick_ms <= previous[0] or host_ms - previous[1] > SKEW_LOOK_WINDOW_MS:
            return
        if not self.skew.observe(self.to_utc_ms(tick_ms), host_ms):
            return
        correction = self.skew.correction_ms
        if correction:
            log.warning("the host clock is %+.1f s off the broker's (measured on fresh ticks): the agent stamps "
                        "its messages and judges command expiry by the corrected time; fix the host's NTP",
                        correction / 1000)
        else:
            log.info("the host clock agrees with the broker's again: no correction")

    def connected(self, server: str) -> None:
        """After (re)connecting the terminal: measure afresh; another trade server starts from its own record."""
        self._tracker.forget_ticks()
        self._looks.clear()
        if server != self._server:
            self._server = server
            self._tracker = OffsetTracker(now_ms=self._now_ms())
            self._restore()

    # ---------------------------------------------------------------- the file
    def _restore(self) -> None:
        known = _load(self._path, self._server) if self._path else None
        if known is not None:
            self._tracker.restore(known)
            log.info("MT5 server time %s until a fresh tick says otherwise", known.label(self._now_ms()))

    def _save(self) -> None:
        if self._path is None:
            return
        offset = self.offset
        data = {"server": self._server, "offset_s": offset.offset_s, "rule": offset.rule.value, "at_ms": offset.at_ms}
        temporary = self._path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(data))
            os.replace(temporary, self._path)  # atomic: a crash leaves the old file or the new one
        except OSError as exc:  # the offset in memory stands; only a restart would miss it
            log.warning("cannot keep the MT5 server time offset in %s: %s", self._path, exc)


def _load(path: Path, server: str) -> ServerOffset | None:
    """The offset kept for ``server``; None for none, another server's, or a torn file."""
    try:
        raw = json.loads(path.read_text())
        if raw.get("server", "") != server:
            return None
        return ServerOffset(int(raw["offset_s"]), Rule(raw["rule"]), Source.PERSISTED, int(raw["at_ms"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
