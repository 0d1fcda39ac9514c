"""FX market hours, in New York time: when the market is open, the daily rollover, the
trading day, and which financial centres are active.

Pure: the caller passes ``now_ms`` (unix milliseconds); nothing reads the clock. Every
boundary is 17:00 in New York (``America/New_York``), the FX convention, so it follows
US daylight saving time: 21:00 UTC in summer, 22:00 UTC in winter.

* The market is closed from Friday 17:00 to Sunday 17:00 New York. The close instant is
  closed and the open instant is open: Friday 16:59:59.999 still trades, Sunday 17:00:00.000
  trades again.
* Each 17:00 from Sunday to Thursday starts the next trading day (Sunday 17:00 starts
  Monday's). Friday 17:00 starts none: it is the weekly close.
* The rollover window surrounds every 17:00 while the market is open: spreads widen and
  brokers roll swaps then, so no new positions. Friday's window has only its part before
  the close, Sunday's only its part after the open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
DAY_BOUNDARY = time(17, 0)          # FX day boundary and weekly close/open, New York time
_MINUTE_MS = 60_000
_MONDAY, _THURSDAY, _FRIDAY, _SATURDAY, _SUNDAY = 0, 3, 4, 5, 6


@dataclass(frozen=True, slots=True)
class Centre:
    """A financial centre's usual trading hours in its own time zone, Monday to Friday."""

    name: str
    zone: ZoneInfo
    opens: time
    closes: time

    def is_active(self, now_ms: int) -> bool:
        local = _local(now_ms, self.zone)
        return local.weekday() <= _FRIDAY and self.opens <= local.time() < self.closes


# Each centre keeps its own daylight saving rules (Sydney's runs opposite to the north's),
# so the overlaps shift through the year the way traders see them.
CENTRES: tuple[Centre, ...] = (
    Centre("sydney", ZoneInfo("Australia/Sydney"), time(7), time(16)),
    Centre("tokyo", ZoneInfo("Asia/Tokyo"), time(9), time(18)),
    Centre("london", ZoneInfo("Europe/London"), time(8), time(17)),
    Centre("new_york", NEW_YORK, time(8), time(17)),
)


@dataclass(frozen=True, slots=True)
class MarketState:
    """The FX market at one instant.

    ``next_open_ms`` is 0 while open and ``next_close_ms`` (the next weekly close) is 0
    while closed, as in the wire message ``MarketSession``.
    """

    is_open: bool
    in_rollover: bool
    active_sessions: tuple[str, ...]
    next_open_ms: int
    next_close_ms: int

    @property
    def accepts_new_positions(self) -> bool:
        return self.is_open and not self.in_rollover


def market_state(now_ms: int, *, rollover_before_min: int = 5, rollover_after_min: int = 5) -> MarketState:
    if rollover_before_min < 0 or rollover_after_min < 0:
        raise ValueError(f"rollover window minutes must not be negative: before {rollover_before_min}, "
                         f"after {rollover_after_min}")
    is_open = is_market_open(now_ms)
    return MarketState(
        is_open=is_open,
        in_rollover=is_open and _near_day_boundary(now_ms, rollover_before_min, rollover_after_min),
        active_sessions=tuple(c.name for c in CENTRES if is_open and c.is_active(now_ms)),
        next_open_ms=0 if is_open else _next_weekly_open_ms(now_ms),
        next_close_ms=_next_weekly_close_ms(now_ms) if is_open else 0,
    )


def is_market_open(now_ms: int) -> bool:
    today = _ny_date(now_ms)
    weekday = today.weekday()
    if weekday == _SATURDAY:
        return False
    if weekday == _FRIDAY:
        return now_ms < boundary_ms(today)
    if weekday == _SUNDAY:
        return now_ms >= boundary_ms(today)
    return True


def trading_day_start_ms(now_ms: int) -> int:
    """The 17:00 New York that started the current (or, at the weekend, the last) trading
    day: the base of the daily loss. From Friday 17:00 to Sunday 17:00 it is Thursday's."""
    day = _ny_date(now_ms)
    if boundary_ms(day) > now_ms:
        day -= timedelta(days=1)
    while not _starts_trading_day(day):
        day -= timedelta(days=1)
    return boundary_ms(day)


def next_trading_day_start_ms(now_ms: int) -> int:
    """The first 17:00 New York after ``now_ms`` that starts a trading day: when a daily
    stop-out ends. From Thursday 17:00 on, that is Sunday 17:00."""
    day = _ny_date(now_ms)
    if boundary_ms(day) <= now_ms:
        day += timedelta(days=1)
    while not _starts_trading_day(day):
        day += timedelta(days=1)
    return boundary_ms(day)


def minutes_to_weekly_close(now_ms: int) -> float:
    """Minutes until Friday 17:00 New York; 0.0 while the market is closed."""
    if not is_market_open(now_ms):
        return 0.0
    return (_next_weekly_close_ms(now_ms) - now_ms) / _MINUTE_MS


def boundary_ms(day: date) -> int:
    """17:00 New York on ``day``, in unix ms. Always exists: DST switches at 02:00."""
    return int(datetime.combine(day, DAY_BOUNDARY, tzinfo=NEW_YORK).timestamp()) * 1000


# ----------------------------------------------------------------------------- helpers


def _local(now_ms: int, zone: ZoneInfo) -> datetime:
    # Whole seconds: float milliseconds could round 23:59:59.9995 into the next day.
    return datetime.fromtimestamp(now_ms // 1000, zone)


def _ny_date(now_ms: int) -> date:
    return _local(now_ms, NEW_YORK).date()


def _starts_trading_day(day: date) -> bool:
    return day.weekday() in (_SUNDAY, *range(_MONDAY, _THURSDAY + 1))


def _near_day_boundary(now_ms: int, before_min: int, after_min: int) -> bool:
    today = _ny_date(now_ms)
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        boundary = boundary_ms(day)
        if boundary - before_min * _MINUTE_MS <= now_ms < boundary + after_min * _MINUTE_MS:
            return True
    return False


def _next_weekly_close_ms(now_ms: int) -> int:
    today = _ny_date(now_ms)
    friday = today + timedelta(days=(_FRIDAY - today.weekday()) % 7)
    if boundary_ms(friday) <= now_ms:
        friday += timedelta(days=7)
    return boundary_ms(friday)


def _next_weekly_open_ms(now_ms: int) -> int:
    today = _ny_date(now_ms)
    sunday = today + timedelta(days=(_SUNDAY - today.weekday()) % 7)
    if boundary_ms(sunday) <= now_ms:
        sunday += timedelta(days=7)
    return boundary_ms(sunday)
