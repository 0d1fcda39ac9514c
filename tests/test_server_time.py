"""The agent's view of the trade server's clock (``client.core.server_time``): what offset
it finds from the ticks it reads, when it keeps it, and how it converts MT5 times to UTC.
Pure: every time is passed in. The simulated terminal's own model of the server clock
(``client.sim.server_clock``) is written separately; both must agree hour by hour."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mt5fleet.client.core.server_time import (
    MAX_RESIDUAL_MS,
    OffsetTracker,
    Rule,
    ServerOffset,
    Source,
    last_weekly_close_ms,
    new_york_close_offset_s,
    rounded_offset_s,
)
from mt5fleet.client.sim.server_clock import NEW_YORK_CLOSE
from mt5fleet.proto.domain.sessions import is_market_open

HOUR_S, HOUR_MS = 3600, 3_600_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


WINTER_WEDNESDAY = ms(2026, 11, 18, 15)  # 10:00 New York
SUMMER_WEDNESDAY = ms(2026, 7, 15, 14)
SATURDAY = ms(2026, 11, 21, 12)
FRIDAY_CLOSE = ms(2026, 11, 20, 22)     # 17:00 New York, winter time


def ticks_every_second(tracker: OffsetTracker, offset_s: int, start_ms: int, seconds: int = 3,
                       symbol: str = "EURUSD", age_ms: int = 150) -> None:
    """The agent's price loop: a tick ``age_ms`` old each second, stamped in server time."""
    for i in range(seconds):
        now = start_ms + i * 1000
        tracker.observe(symbol, now - age_ms + offset_s * 1000, now)


# ------------------------------------------------------------------ the convention


@pytest.mark.parametrize(("utc_ms", "offset_s"), [
    (WINTER_WEDNESDAY, 2 * HOUR_S), (SUMMER_WEDNESDAY, 3 * HOUR_S),
    (ms(2026, 3, 6, 21, 59), 2 * HOUR_S),    # the Friday before the US switch, a minute before the close
    (ms(2026, 3, 8, 20, 59), 2 * HOUR_S),    # Sunday after 02:00 New York, still closed: unchanged
    (ms(2026, 3, 8, 21, 0), 3 * HOUR_S),     # Sunday 17:00 EDT: the week opens at Monday 00:00 GMT+3
    (ms(2026, 10, 30, 20, 59), 3 * HOUR_S),  # the Friday before the autumn switch
    (ms(2026, 11, 1, 21, 59), 3 * HOUR_S),   # Sunday 16:59 EST
    (ms(2026, 11, 1, 22, 0), 2 * HOUR_S),    # Sunday 17:00 EST: Monday 00:00 GMT+2
])
def test_new_york_close_is_gmt_plus_2_or_3_switching_at_the_weekly_open(utc_ms: int, offset_s: int) -> None:
    assert new_york_close_offset_s(utc_ms) == offset_s


def test_the_agents_rule_and_the_simulated_servers_agree_every_hour_for_four_years() -> None:
    start = ms(2024, 1, 1)
    hours = range(0, 4 * 365 * 24)
    assert all(new_york_close_offset_s(start + h * HOUR_MS) == NEW_YORK_CLOSE.offset_s(start + h * HOUR_MS)
               for h in hours)


@pytest.mark.parametrize("offset", [
    ServerOffset(2 * HOUR_S, Rule.NEW_YORK_CLOSE, Source.MEASURED), ServerOffset(0, Rule.FIXED, Source.MEASURED),
    ServerOffset(-5 * HOUR_S - 1800, Rule.FIXED, Source.MEASURED)])
def test_server_times_convert_to_utc_and_back_for_every_open_hour(offset: ServerOffset) -> None:
    start = ms(2026, 1, 1)
    for hour in range(0, 366 * 24):
        utc = start + hour * HOUR_MS + 123
        if is_market_open(utc):  # the hour an autumn switch repeats lies in the closed weekend
            assert offset.to_utc_ms(offset.to_server_ms(utc)) == utc


def test_a_time_stamped_before_the_switch_converts_with_the_offset_of_its_day() -> None:
    """The deal history of last week, read this week: each time with its own day's offset."""
    offset = ServerOffset(3 * HOUR_S, Rule.NEW_YORK_CLOSE, Source.MEASURED, SUMMER_WEDNESDAY)
    friday_close_in_server_time = ms(2026, 3, 7, 0)  # Saturday 00:00 GMT+2
    assert offset.to_utc_ms(friday_close_in_server_time) == ms(2026, 3, 6, 22)
    assert offset.to_utc_ms(ms(2026, 3, 9, 0)) == ms(2026, 3, 8, 21)  # Monday 00:00 GMT+3


@pytest.mark.parametrize(("difference_ms", "expected"), [
    (2 * HOUR_MS - 150, 2 * HOUR_S), (3 * HOUR_MS + 40_000, 3 * HOUR_S), (-150, 0),
    (int(5.5 * HOUR_MS) - 900, int(5.5 * HOUR_S)),              # a half-hour zone
    (2 * HOUR_MS - MAX_RESIDUAL_MS - 1, None),                   # a tick minutes old: no sample
    (2 * HOUR_MS - 15 * 60_000, None)])
def test_samples_lie_on_the_half_hour_grid_or_are_no_samples(difference_ms: int, expected: int | None) -> None:
    assert rounded_offset_s(WINTER_WEDNESDAY + difference_ms, WINTER_WEDNESDAY, MAX_RESIDUAL_MS) == expected


# ------------------------------------------------------------------ finding the offset


@pytest.mark.parametrize(("offset_s", "now", "rule"), [
    (2 * HOUR_S, WINTER_WEDNESDAY, Rule.NEW_YORK_CLOSE), (3 * HOUR_S, SUMMER_WEDNESDAY, Rule.NEW_YORK_CLOSE),
    (0, SUMMER_WEDNESDAY, Rule.FIXED), (2 * HOUR_S, SUMMER_WEDNESDAY, Rule.FIXED)])
def test_fresh_ticks_measure_the_offset_and_its_rule(offset_s: int, now: int, rule: Rule) -> None:
    tracker = OffsetTracker(now_ms=now)
    ticks_every_second(tracker, offset_s, now)
    assert (tracker.offset.offset_s, tracker.offset.rule, tracker.offset.source) == (offset_s, rule, Source.MEASURED)
    assert tracker.offset.at_ms == now + 2000  # confirmed by the latest fresh tick


def test_a_known_offset_changes_only_on_a_fresh_tick() -> None:
    known = ServerOffset(2 * HOUR_S, Rule.NEW_YORK_CLOSE, Source.PERSISTED, WINTER_WEDNESDAY - 86_400_000)
    tracker = OffsetTracker(known)
    # A terminal that lost its broker half an hour ago: the same old tick on every look.
    stale = WINTER_WEDNESDAY - 30 * 60_000 + 2 * HOUR_MS
    for second in range(5):
        assert not tracker.observe("EURUSD", stale, WINTER_WEDNESDAY + second * 1000)
    assert tracker.offset == known
    # Ticks flow again: the first new one proves itself fresh.
    assert not tracker.observe("EURUSD", WINTER_WEDNESDAY + 5000 + 2 * HOUR_MS, WINTER_WEDNESDAY + 5100)
    assert tracker.offset.source is Source.MEASURED and tracker.offset.offset_s == 2 * HOUR_S


def test_a_new_tick_after_a_long_gap_proves_nothing_and_a_reconnect_forgets_the_last_look() -> None:
    tracker = OffsetTracker(ServerOffset(0, Rule.FIXED, Source.PERSISTED))
    tracker.observe("EURUSD", WINTER_WEDNESDAY, WINTER_WEDNESDAY)
    later = WINTER_WEDNESDAY + 10 * 60_000
    assert not tracker.observe("EURUSD", later - 30 * 60_000 + 2 * HOUR_MS, later)  # seen 10 min ago: not fresh
    tracker.forget_ticks()
    tracker.observe("EURUSD", later + 2 * HOUR_MS, later + 500)
    assert tracker.offset.source is Source.PERSISTED  # the first look after a reconnect proves nothing
    assert tracker.observe("EURUSD", later + 1000 + 2 * HOUR_MS, later + 1200)
    assert (tracker.offset.offset_s, tracker.offset.rule) == (2 * HOUR_S, Rule.NEW_YORK_CLOSE)


def test_across_the_us_switch_the_rule_predicts_and_the_first_fresh_tick_confirms() -> None:
    friday = ms(2026, 3, 6, 15)
    tracker = OffsetTracker(now_ms=friday)
    ticks_every_second(tracker, 2 * HOUR_S, friday)
    weekend_close_tick = ms(2026, 3, 6, 22) + 2 * HOUR_MS
    for hours in range(0, 47):  # the weekend: the Friday tick stands, nothing changes
        assert not tracker.observe("EURUSD", weekend_close_tick, ms(2026, 3, 6, 22) + hours * HOUR_MS)
    assert tracker.offset.offset_at(ms(2026, 3, 8, 21, 0, 1)) == 3 * HOUR_S  # predicted for the open
    monday = ms(2026, 3, 9, 14)
    ticks_every_second(tracker, 3 * HOUR_S, monday)
    assert (tracker.offset.offset_s, tracker.offset.rule, tracker.offset.at_ms) == (
        3 * HOUR_S, Rule.NEW_YORK_CLOSE, monday + 2000)


def test_a_broker_that_does_not_switch_is_held_fixed_from_its_first_fresh_tick() -> None:
    friday = ms(2026, 3, 6, 15)
    tracker = OffsetTracker(now_ms=friday)
    ticks_every_second(tracker, 2 * HOUR_S, friday)
    monday = ms(2026, 3, 9, 14)
    tracker.observe("EURUSD", ms(2026, 3, 6, 22) + 2 * HOUR_MS, monday - 1000)  # the Friday tick, once more
    assert tracker.observe("EURUSD", monday - 100 + 2 * HOUR_MS, monday)  # still GMT+2 after the US switch
    assert (tracker.offset.offset_s, tracker.offset.rule) == (2 * HOUR_S, Rule.FIXED)
    assert tracker.offset.to_utc_ms(monday + 2 * HOUR_MS) == monday


@pytest.mark.parametrize("offset_s", [2 * HOUR_S, 0])
def test_started_at_the_weekend_the_week_s_last_tick_gives_the_offset(offset_s: int) -> None:
    tracker = OffsetTracker(now_ms=SATURDAY)
    assert tracker.offset.source is Source.ASSUMED
    last_tick = FRIDAY_CLOSE - 2_500 + offset_s * 1000  # the week's last EURUSD tick, 2.5 s before the close
    assert tracker.observe("EURUSD", last_tick, SATURDAY)
    assert (tracker.offset.offset_s, tracker.offset.source) == (offset_s, Source.WEEKLY_CLOSE)
    assert last_weekly_close_ms(SATURDAY) == last_weekly_close_ms(FRIDAY_CLOSE) == FRIDAY_CLOSE


def test_a_tick_far_from_the_close_is_no_weekend_sample() -> None:
    tracker = OffsetTracker(now_ms=SATURDAY)
    assert not tracker.observe("XAUUSD", FRIDAY_CLOSE - 20 * 60_000 + 2 * HOUR_MS, SATURDAY)
    assert tracker.offset.source is Source.ASSUMED


def test_the_status_label_names_the_offset_its_rule_and_its_source() -> None:
    offset = ServerOffset(2 * HOUR_S, Rule.NEW_YORK_CLOSE, Source.MEASURED, WINTER_WEDNESDAY)
    assert offset.label(WINTER_WEDNESDAY) == "UTC+02:00 (GMT+2/+3 New York close, measured)"
    assert offset.label(SUMMER_WEDNESDAY).startswith("UTC+03:00")
    assert ServerOffset(-int(3.5 * HOUR_S), Rule.FIXED, Source.PERSISTED).label(0) == "UTC-03:30 (fixed, persisted)"
