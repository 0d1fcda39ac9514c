"""The trade server's clock as the agent knows it: how far MetaTrader 5 times are from UTC.

The ``MetaTrader5`` package reports tick, deal and order times in the broker's trade-server
time stamped as if it were UTC: most brokers run GMT+2 in winter and GMT+3 in summer,
switching with US daylight saving at the New York 17:00 rollover ("New York close", so the
FX week opens Monday 00:00 server time), some run on UTC. The agent publishes UTC, so:

* **measured**: a tick newer than the one seen on the previous look, at most a minute ago,
  reached the terminal since then. Its time minus the host's UTC clock, rounded to the half
  hour, is the offset, if the rounding leaves at most two minutes (else it is no sample).
* **weekly close**: while the market is closed and nothing better is known, the newest
  tick was made just before the Friday close: its time minus the close gives the offset.
* **rule**: an offset that is what the New York close convention gives at that instant is
  taken to follow it, so the switch is predicted for the hours no tick shows (the weekend)
  and for older times (the deal history); any other offset is held fixed. A fresh tick
  always wins over the prediction.
* **kept**: while nothing can be measured (weekend, terminal offline) the last known offset
  stands; the agent persists it (``persisted`` after a restart).
* **assumed**: with nothing known yet, the common convention.

Pure: the caller passes every time; nothing reads a clock.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mt5fleet.proto.domain.sessions import NEW_YORK, boundary_ms, is_market_open, trading_day_start_ms

HALF_HOUR_MS = 1_800_000
# A fresh tick is at most FRESH_WINDOW_MS old (plus network latency): a sample off a
# half hour by more than MAX_RESIDUAL_MS is a stale tick or a skewed host clock, not an offset.
FRESH_WINDOW_MS = 60_000
MAX_RESIDUAL_MS = 120_000
# A liquid symbol's last tick of the week comes within minutes of the Friday close.
CLOSE_RESIDUAL_MS = 600_000
NEW_YORK_CLOSE_STANDARD_S = 7_200  # GMT+2 in winter, GMT+3 in summer
_FRIDAY = 4
_HOUR_MS = 3_600_000


class Rule(enum.StrEnum):
    FIXED = "fixed"                    # the same offset all year (UTC brokers, among others)
    NEW_YORK_CLOSE = "new_york_close"  # GMT+2/+3, switching with US daylight saving at the rollover


class Source(enum.StrEnum):
    MEASURED = "measured"          # a fresh tick against the host's clock
    WEEKLY_CLOSE = "weekly_close"  # the week's last tick against the Friday close
    PERSISTED = "persisted"        # kept from an earlier run of the agent
    ASSUMED = "assumed"            # nothing known yet: the common convention


def us_summer(utc_ms: int) -> bool:
    """US daylight saving as a New York close server applies it: that of the 17:00 New York
    rollover that began the current trading day (so it never changes inside one)."""
    return _us_summer_hour(utc_ms // _HOUR_MS)


@functools.lru_cache(maxsize=1024)
def _us_summer_hour(hour: int) -> bool:
    # Rollovers fall on whole UTC hours: one answer holds for the whole hour.
    start = datetime.fromtimestamp(trading_day_start_ms(hour * _HOUR_MS) // 1000, NEW_YORK)
    return bool(start.dst())


def new_york_close_offset_s(utc_ms: int) -> int:
    return NEW_YORK_CLOSE_STANDARD_S + (3600 if us_summer(utc_ms) else 0)


@dataclass(frozen=True, slots=True)
class ServerOffset:
    """Server time minus UTC, how it is known, and for which instant (UTC ms; 0: none)."""

    offset_s: int
    rule: Rule
    source: Source
    at_ms: int = 0

    def offset_at(self, utc_ms: int) -> int:
        if self.rule is Rule.NEW_YORK_CLOSE:
            return new_york_close_offset_s(utc_ms)
        return self.offset_s

    def to_utc_ms(self, server_ms: int) -> int:
        if self.rule is Rule.FIXED:
            return server_ms - self.offset_s * 1000
        # Reading the rule at (server time - standard offset) is exact outside the hour a
        # switch skips or repeats, and that hour lies in the closed weekend.
        return server_ms - self.offset_at(server_ms - NEW_YORK_CLOSE_STANDARD_S * 1000) * 1000

    def to_server_ms(self, utc_ms: int) -> int:
        return utc_ms + self.offset_at(utc_ms) * 1000

    def label(self, now_ms: int) -> str:
        """What the status page says: 'UTC+02:00 (GMT+2/+3 New York close, measured)'."""
        offset_s = self.offset_at(now_ms)
        sign, minutes = "+" if offset_s >= 0 else "-", abs(offset_s) // 60
        rule = "GMT+2/+3 New York close" if self.rule is Rule.NEW_YORK_CLOSE else "fixed"
        return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d} ({rule}, {self.source.value})"


def settled(offset_s: int, at_ms: int, source: Source) -> ServerOffset:
    """An offset known at ``at_ms``, with the rule it is taken to follow."""
    rule = Rule.NEW_YORK_CLOSE if offset_s == new_york_close_offset_s(at_ms) else Rule.FIXED
    return ServerOffset(offset_s, rule, source, at_ms)


def assumed(now_ms: int) -> ServerOffset:
    return ServerOffset(new_york_close_offset_s(now_ms), Rule.NEW_YORK_CLOSE, Source.ASSUMED)


def rounded_offset_s(server_ms: int, utc_ms: int, tolerance_ms: int) -> int | None:
    """``server_ms - utc_ms`` on the half-hour grid; None when it lies further than ``tolerance_ms`` off it."""
    difference = server_ms - utc_ms
    grid = round(difference / HALF_HOUR_MS) * HALF_HOUR_MS
    return grid // 1000 if abs(difference - grid) <= tolerance_ms else None


def last_weekly_close_ms(now_ms: int) -> int:
    """The latest Friday 17:00 New York at or before ``now_ms``."""
    today = datetime.fromtimestamp(now_ms // 1000, NEW_YORK).date()
    friday = today - timedelta(days=(today.weekday() - _FRIDAY) % 7)
    close = boundary_ms(friday)
    return close if close <= now_ms else boundary_ms(friday - timedelta(days=7))


class OffsetTracker:
    """The offset in use, moved by the ticks the agent reads. Pure and not thread-safe: one
    owner (the agent's MT5 thread) feeds it."""

    def __init__(self, known: ServerOffset | None = None, *, now_ms: int = 0) -> None:
        self.offset = known or assumed(now_ms)
        self._seen: dict[str, tuple[int, int]] = {}  # symbol -> (newest tick time, host time of that look)

    def forget_ticks(self) -> None:
        """After a reconnect: what the terminal showed before proves nothing about freshness now."""
        self._seen.clear()

    def observe(self, symbol: str, tick_ms: int, host_ms: int) -> bool:
        """One tick read at ``host_ms`` (UTC); True when the offset or its rule changed."""
        previous = self._seen.get(symbol)
        self._seen[symbol] = (max(tick_ms, previous[0]) if previous else tick_ms, host_ms)
        fresh = previous is not None and tick_ms > previous[0] and host_ms - previous[1] <= FRESH_WINDOW_MS
        found = self._sample(tick_ms, host_ms, fresh)
        if found is None:
            return False
        # Worth keeping (and saying) when the offset or its rule moved, or it was only assumed.
        changed = (found.offset_s, found.rule) != (self.offset.offset_s, self.offset.rule) or (
            self.offset.source is Source.ASSUMED)
        self.offset = found
        return changed

    def _sample(self, tick_ms: int, host_ms: int, fresh: bool) -> ServerOffset | None:
        if fresh:
            offset_s = rounded_offset_s(tick_ms, host_ms, MAX_RESIDUAL_MS)
            return None if offset_s is None else settled(offset_s, host_ms, Source.MEASURED)
        if self.offset.source is not Source.ASSUMED:
            return None  # a known offset changes only on proof of a fresh tick
        if is_market_open(host_ms):  # first look: a liquid symbol's latest tick is seconds old
            offset_s = rounded_offset_s(tick_ms, host_ms, MAX_RESIDUAL_MS)
            return None if offset_s is None else settled(offset_s, host_ms, Source.MEASURED)
        close = last_weekly_close_ms(host_ms)
        # The tick came up to CLOSE_RESIDUAL_MS before the close: centre that window on the grid.
        offset_s = rounded_offset_s(tick_ms + CLOSE_RESIDUAL_MS // 2, close, CLOSE_RESIDUAL_MS // 2)
        return None if offset_s is None else settled(offset_s, close, Source.WEEKLY_CLOSE)

    def restore(self, known: ServerOffset) -> None:
        """The offset persisted for this trade server, until the ticks say otherwise."""
        self.offset = replace(known, source=Source.PERSISTED)
