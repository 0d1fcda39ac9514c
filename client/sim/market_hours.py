"""FX market hours for the simulation: closed from Friday 17:00 to Sunday 17:00 New York time.

The rules are ``mt5fleet.proto.domain.sessions``'s (the agent and workers use the same ones);
this adds what a simulated terminal asks on every call, cheaply: is the market open, since
when is the price frozen, when does it reopen. The current weekend is cached. Times are
unix milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mt5fleet.proto.domain.sessions import NEW_YORK, boundary_ms

FRIDAY = 4
# Sunday 17:00 to Friday 17:00 New York: US clocks change on Sunday at 02:00, inside the
# closed weekend, so the open week is always exactly five days of 24 hours.
OPEN_WEEK_MS = 5 * 86_400_000


def weekend_around(t_ms: int) -> tuple[int, int]:
    """The weekend closure (close, reopen) that contains ``t_ms`` or is the next one after it."""
    local = datetime.fromtimestamp(t_ms // 1000, NEW_YORK)
    friday = local.date() - timedelta(days=(local.weekday() - FRIDAY) % 7)
    close, reopen = boundary_ms(friday), boundary_ms(friday + timedelta(days=2))
    if t_ms >= reopen:  # Sunday evening to Friday afternoon: the coming weekend
        close, reopen = boundary_ms(friday + timedelta(days=7)), boundary_ms(friday + timedelta(days=9))
    return close, reopen


class MarketCalendar:
    """Open/closed answers with the current weekend cached. The close instant is closed, the reopen open."""

    def __init__(self) -> None:
        # One tuple, replaced whole: terminals on other threads never see half an update.
        self._current = weekend_around(0)

    def _weekend(self, t_ms: int) -> tuple[int, int]:
        close, reopen = self._current
        if not (close - OPEN_WEEK_MS <= t_ms < reopen):
            self._current = close, reopen = weekend_around(t_ms)
        return close, reopen

    def is_open(self, t_ms: int) -> bool:
        return t_ms < self._weekend(t_ms)[0]

    def price_time_ms(self, t_ms: int) -> int:
        """The time whose price is current at ``t_ms``: the Friday close while the market is closed."""
        return min(t_ms, self._weekend(t_ms)[0])

    def reopen_ms(self, t_ms: int) -> int:
        """When the market is next open at or after ``t_ms``."""
        close, reopen = self._weekend(t_ms)
        return t_ms if t_ms < close else reopen


def next_rollover_ms(t_ms: int) -> int:
    """The next 17:00 New York after ``t_ms``: where the FX trading day (and DAY orders) end."""
    today = datetime.fromtimestamp(t_ms // 1000, NEW_YORK).date()
    boundary = boundary_ms(today)
    return boundary if t_ms < boundary else boundary_ms(today + timedelta(days=1))


def as_unix_seconds(value: object) -> float:
    """A date argument of the MT5 API: a datetime (naive means UTC here) or unix seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a datetime or unix seconds, got {type(value).__name__}")
