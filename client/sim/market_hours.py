"""FX market hours for the simulation: closed from Friday 17:00 to Sunday 17:00 New York time.

Both the reference feed (prices stand still while closed) and the simulated terminal
(market-closed retcode) ask this calendar. Times are unix seconds. The answer for the
current week is cached, because a simulated terminal asks on every call.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
FRIDAY = 4
# Sunday 17:00 to Friday 17:00 New York: US clocks change on Sunday at 02:00, inside the
# closed weekend, so the open week is always exactly five days of 24 hours.
OPEN_WEEK_S = 5 * 86_400


def _new_york_17h(day: date) -> float:
    return datetime.combine(day, time(17), NEW_YORK).timestamp()


def weekend_around(t_s: float) -> tuple[float, float]:
    """The weekend closure (close, reopen) that contains ``t_s`` or is the next one after it."""
    local = datetime.fromtimestamp(t_s, NEW_YORK)
    friday = local.date() - timedelta(days=(local.weekday() - FRIDAY) % 7)
    close = _new_york_17h(friday)
    reopen = _new_york_17h(friday + timedelta(days=2))
    if t_s >= reopen:  # Sunday evening to Friday morning: the coming weekend
        close = _new_york_17h(friday + timedelta(days=7))
        reopen = _new_york_17h(friday + timedelta(days=9))
    return close, reopen


class MarketCalendar:
    """Open/closed answers with the current weekend cached."""

    def __init__(self) -> None:
        self._close, self._reopen = weekend_around(0.0)

    def _weekend(self, t_s: float) -> tuple[float, float]:
        if not (self._close - OPEN_WEEK_S <= t_s < self._reopen):
            self._close, self._reopen = weekend_around(t_s)
        return self._close, self._reopen

    def is_open(self, t_s: float) -> bool:
        close, _ = self._weekend(t_s)
        return t_s < close

    def price_time(self, t_s: float) -> float:
        """The time whose price is current at ``t_s``: the Friday close while the market is closed."""
        close, _ = self._weekend(t_s)
        return t_s if t_s < close else close

    def reopen_after(self, t_s: float) -> float:
        """When the market is next open at or after ``t_s``."""
        close, reopen = self._weekend(t_s)
        return t_s if t_s < close else reopen


def next_rollover(t_s: float) -> float:
    """The next 17:00 New York after ``t_s``: where the FX trading day (and DAY orders) end."""
    local = datetime.fromtimestamp(t_s, NEW_YORK)
    today = _new_york_17h(local.date())
    return today if t_s < today else _new_york_17h(local.date() + timedelta(days=1))


def as_unix_seconds(value: object) -> float:
    """A date argument of the MT5 API: a datetime (naive means UTC here) or unix seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a datetime or unix seconds, got {type(value).__name__}")
