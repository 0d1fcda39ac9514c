"""FX market hours in New York time: the weekly close, the rollover window, the trading
day, the active centres, across the March and November daylight-saving switches.

2024 calendar used below: US summer time began Sunday 10 March and ended Sunday
3 November; UK summer time ran 31 March to 27 October; Sydney's ended 7 April.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mt5fleet.proto.domain.sessions import (
    MarketState,
    is_market_open,
    market_state,
    minutes_to_weekly_close,
    next_trading_day_start_ms,
    trading_day_start_ms,
)
from mt5fleet.proto.v1.common_pb2 import MarketSession
from mt5fleet.workers.adapters.wire import session_message

NY = ZoneInfo("America/New_York")
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    """Unix ms of a New York wall-clock time."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=NY).timestamp()) * 1000 + ms


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()) * 1000


# Fridays in standard time (January, after November's switch) and in summer time (June).
FRIDAYS = [(2024, 1, 12), (2024, 6, 14), (2024, 11, 8)]
SUNDAYS = [(2024, 1, 14), (2024, 6, 16), (2024, 11, 10)]


# ------------------------------------------------------------------- weekly close/open


@pytest.mark.parametrize("friday", FRIDAYS)
def test_friday_one_ms_before_17_00_new_york_still_trades(friday):
    assert is_market_open(ny(*friday, 16, 59, 59, 999))


@pytest.mark.parametrize("friday", FRIDAYS)
def test_friday_17_00_new_york_closes_the_market(friday):
    state = market_state(ny(*friday, 17))
    assert not state.is_open
    assert state.next_close_ms == 0


@pytest.mark.parametrize("sunday", SUNDAYS)
def test_sunday_one_ms_before_17_00_new_york_is_still_closed(sunday):
    assert not is_market_open(ny(*sunday, 16, 59, 59, 999))


@pytest.mark.parametrize("sunday", SUNDAYS)
def test_sunday_17_00_new_york_opens_the_market(sunday):
    state = market_state(ny(*sunday, 17))
    assert state.is_open
    assert state.next_open_ms == 0


def test_saturday_is_closed_all_day():
    for hour in range(24):
        assert not is_market_open(ny(2024, 1, 13, hour, 30))


def test_weekdays_trade_around_the_clock():
    for day in (8, 9, 10, 11):  # Monday to Thursday
        for hour in range(24):
            assert is_market_open(ny(2024, 1, day, hour))


def test_weekly_close_is_22_00_utc_in_winter_and_21_00_utc_in_summer():
    assert market_state(ny(2024, 1, 10, 12)).next_close_ms == utc(2024, 1, 12, 22)
    assert market_state(ny(2024, 6, 12, 12)).next_close_ms == utc(2024, 6, 14, 21)


def test_while_open_next_close_is_this_fridays_close():
    monday = ny(2024, 1, 8, 3)
    assert market_state(monday).next_close_ms == ny(2024, 1, 12, 17)


def test_sunday_evening_next_close_is_the_coming_friday():
    assert market_state(ny(2024, 1, 14, 18)).next_close_ms == ny(2024, 1, 19, 17)


def test_while_closed_next_open_is_sunday_17_00_new_york():
    for now in (ny(2024, 1, 12, 17), ny(2024, 1, 13, 9), ny(2024, 1, 14, 16, 59)):
        assert market_state(now).next_open_ms == ny(2024, 1, 14, 17)


def test_march_switch_weekend_is_one_hour_shorter():
    """Closes Friday 8 March at 17:00 EST (22:00 UTC), opens Sunday 10 March at 17:00 EDT
    (21:00 UTC), the day clocks went forward: 47 hours closed, not 48."""
    saturday = ny(2024, 3, 9, 12)
    assert market_state(ny(2024, 3, 8, 12)).next_close_ms == utc(2024, 3, 8, 22)
    assert market_state(saturday).next_open_ms == utc(2024, 3, 10, 21)
    assert utc(2024, 3, 10, 21) - utc(2024, 3, 8, 22) == 47 * HOUR_MS


def test_november_switch_weekend_is_one_hour_longer():
    """Closes Friday 1 November at 17:00 EDT (21:00 UTC), opens Sunday 3 November at
    17:00 EST (22:00 UTC): 49 hours closed."""
    assert market_state(ny(2024, 11, 1, 12)).next_close_ms == utc(2024, 11, 1, 21)
    assert market_state(ny(2024, 11, 2, 12)).next_open_ms == utc(2024, 11, 3, 22)
    assert not is_market_open(utc(2024, 11, 3, 21, 30))  # 16:30 EST: an hour before the open
    assert is_market_open(utc(2024, 11, 3, 22))


def test_switch_sunday_morning_itself_is_closed():
    # 10 March 2024 02:00 EST jumped to 03:00 EDT; nothing about the market changes then.
    assert not is_market_open(ny(2024, 3, 10, 3, 30))
    assert not is_market_open(ny(2024, 11, 3, 1, 30))


# ---------------------------------------------------------------------------- rollover


def test_rollover_window_is_16_55_to_17_05_new_york_by_default():
    tuesday = (2024, 1, 9)
    assert not market_state(ny(*tuesday, 16, 54, 59, 999)).in_rollover
    assert market_state(ny(*tuesday, 16, 55)).in_rollover
    assert market_state(ny(*tuesday, 17)).in_rollover
    assert market_state(ny(*tuesday, 17, 4, 59, 999)).in_rollover
    assert not market_state(ny(*tuesday, 17, 5)).in_rollover


def test_rollover_follows_new_york_summer_time():
    # 17:00 EDT is 21:00 UTC in June.
    assert market_state(utc(2024, 6, 11, 21, 1)).in_rollover
    assert not market_state(utc(2024, 6, 11, 22, 1)).in_rollover


def test_rollover_window_can_be_widened():
    now = ny(2024, 1, 9, 16, 40)
    assert not market_state(now).in_rollover
    assert market_state(now, rollover_before_min=20).in_rollover
    assert market_state(ny(2024, 1, 9, 17, 25), rollover_after_min=30).in_rollover


def test_a_zero_window_means_no_rollover_block():
    assert not market_state(ny(2024, 1, 9, 17), rollover_before_min=0, rollover_after_min=0).in_rollover


def test_negative_rollover_minutes_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        market_state(ny(2024, 1, 9, 12), rollover_before_min=-1)


def test_friday_last_minutes_before_the_close_are_rollover():
    assert market_state(ny(2024, 1, 12, 16, 56)).in_rollover


def test_closed_market_is_never_in_rollover():
    assert not market_state(ny(2024, 1, 12, 17, 1)).in_rollover
    assert not market_state(ny(2024, 1, 14, 16, 58)).in_rollover


def test_sunday_first_minutes_after_the_open_are_rollover():
    assert market_state(ny(2024, 1, 14, 17, 2)).in_rollover
    assert not market_state(ny(2024, 1, 14, 17, 5)).in_rollover


# ------------------------------------------------------------------------- trading day


@pytest.mark.parametrize(("now", "day_start"), [
    (ny(2024, 1, 9, 10), ny(2024, 1, 8, 17)),              # Tuesday morning: Monday 17:00
    (ny(2024, 1, 9, 16, 59, 59, 999), ny(2024, 1, 8, 17)),
    (ny(2024, 1, 9, 17), ny(2024, 1, 9, 17)),              # the boundary starts the new day
    (ny(2024, 1, 8, 9), ny(2024, 1, 7, 17)),               # Monday morning: Sunday's open
    (ny(2024, 1, 12, 12), ny(2024, 1, 11, 17)),            # Friday: Thursday 17:00
    (ny(2024, 1, 12, 17, 30), ny(2024, 1, 11, 17)),        # after the close: still Friday's day
    (ny(2024, 1, 13, 12), ny(2024, 1, 11, 17)),            # Saturday
    (ny(2024, 1, 14, 16, 59), ny(2024, 1, 11, 17)),        # Sunday before the open
])
def test_trading_day_starts_at_the_latest_17_00_new_york_that_opens_a_day(now, day_start):
    assert trading_day_start_ms(now) == day_start


def test_trading_day_start_across_the_march_switch():
    # Monday 11 March 10:00 EDT: the day began Sunday 17:00 EDT = 21:00 UTC.
    assert trading_day_start_ms(ny(2024, 3, 11, 10)) == utc(2024, 3, 10, 21)
    # Sunday 10 March before the open: Thursday 7 March 17:00 EST = 22:00 UTC.
    assert trading_day_start_ms(ny(2024, 3, 10, 12)) == utc(2024, 3, 7, 22)


def test_trading_day_start_across_the_november_switch():
    assert trading_day_start_ms(ny(2024, 11, 4, 10)) == utc(2024, 11, 3, 22)
    assert trading_day_start_ms(ny(2024, 11, 1, 10)) == utc(2024, 10, 31, 21)


@pytest.mark.parametrize(("now", "next_start"), [
    (ny(2024, 1, 9, 10), ny(2024, 1, 9, 17)),
    (ny(2024, 1, 9, 17), ny(2024, 1, 10, 17)),             # exactly at a start: the next one
    (ny(2024, 1, 11, 18), ny(2024, 1, 14, 17)),            # Thursday evening: Sunday's open
    (ny(2024, 1, 12, 12), ny(2024, 1, 14, 17)),            # Friday: no new day at the close
    (ny(2024, 1, 14, 16, 59), ny(2024, 1, 14, 17)),
])
def test_next_trading_day_start(now, next_start):
    assert next_trading_day_start_ms(now) == next_start


# -------------------------------------------------------------------- weekly countdown


def test_minutes_to_weekly_close_on_friday_afternoon():
    assert minutes_to_weekly_close(ny(2024, 1, 12, 16, 45)) == 15.0
    assert minutes_to_weekly_close(ny(2024, 1, 12, 16, 59, 59, 999)) == pytest.approx(1 / 60_000)


def test_minutes_to_weekly_close_from_monday():
    assert minutes_to_weekly_close(ny(2024, 1, 8, 17)) == 4 * 24 * 60


def test_minutes_to_weekly_close_is_zero_while_closed():
    assert minutes_to_weekly_close(ny(2024, 1, 13, 12)) == 0.0


# --------------------------------------------------------------------- active centres


def test_london_and_new_york_overlap_on_a_winter_morning():
    # 09:00 EST = 14:00 GMT; Tokyo is at 23:00, Sydney at 01:00.
    assert market_state(ny(2024, 1, 10, 9)).active_sessions == ("london", "new_york")


def test_asian_session_in_the_new_york_evening():
    # 20:00 EST Wednesday = 10:00 Thursday in Tokyo, 12:00 in Sydney (summer time).
    assert market_state(ny(2024, 1, 10, 20)).active_sessions == ("sydney", "tokyo")


def test_sunday_open_starts_with_sydney():
    # Sunday 17:00 EST = Monday 09:00 in Sydney, 07:00 in Tokyo.
    assert market_state(ny(2024, 1, 14, 17)).active_sessions == ("sydney",)


def test_london_opens_at_08_00_london_time_through_the_mismatched_dst_weeks():
    # 12 March: New York on summer time, London not yet: 03:30 EDT = 07:30 GMT, closed.
    assert "london" not in market_state(ny(2024, 3, 12, 3, 30)).active_sessions
    # 2 April: both on summer time: 03:30 EDT = 08:30 BST, open.
    assert "london" in market_state(ny(2024, 4, 2, 3, 30)).active_sessions


def test_new_york_session_closes_at_17_00_new_york():
    assert "new_york" in market_state(ny(2024, 1, 10, 16, 59)).active_sessions
    assert "new_york" not in market_state(ny(2024, 1, 10, 17)).active_sessions


def test_no_session_is_active_while_the_market_is_closed():
    assert market_state(ny(2024, 1, 13, 10)).active_sessions == ()


# ------------------------------------------------------------------------------ proto


def test_to_proto_while_open():
    state = market_state(ny(2024, 1, 10, 9))
    msg = session_message(state)
    assert isinstance(msg, MarketSession)
    assert (msg.is_open, msg.in_rollover, list(msg.active_sessions)) == (True, False, ["london", "new_york"])
    assert (msg.next_open, msg.next_close) == (0, ny(2024, 1, 12, 17))


def test_to_proto_while_closed():
    msg = session_message(market_state(ny(2024, 1, 13, 10)))
    assert (msg.is_open, msg.next_open, msg.next_close) == (False, ny(2024, 1, 14, 17), 0)
    assert list(msg.active_sessions) == []


def test_market_state_is_frozen():
    state = market_state(ny(2024, 1, 10, 9))
    with pytest.raises(AttributeError):
        state.is_open = False  # type: ignore[misc]
    assert isinstance(state, MarketState)


# ------------------------------------------------------------------------- properties

ANY_MS = st.integers(min_value=utc(2020, 1, 1), max_value=utc(2035, 12, 31))


@settings(max_examples=300, deadline=None)
@given(ANY_MS)
def test_state_is_consistent_at_any_instant(now):
    state = market_state(now)
    assert state.is_open == is_market_open(now)
    if state.is_open:
        assert state.next_open_ms == 0 and state.next_close_ms > now
        assert state.next_close_ms - now <= 5 * 24 * HOUR_MS + HOUR_MS
    else:
        assert state.next_close_ms == 0 and state.next_open_ms > now
        assert state.active_sessions == () and not state.in_rollover
        assert state.next_open_ms - now <= 49 * HOUR_MS


@settings(max_examples=300, deadline=None)
@given(ANY_MS)
def test_trading_day_brackets_now_and_starts_at_17_00_new_york(now):
    start, following = trading_day_start_ms(now), next_trading_day_start_ms(now)
    assert start <= now < following
    for boundary in (start, following):
        local = datetime.fromtimestamp(boundary / 1000, NY)
        assert local.time() == time(17) and local.weekday() in (6, 0, 1, 2, 3)
