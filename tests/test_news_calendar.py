"""The economic calendar and news windows (issue 17): the three source formats read to the
same UTC instants across time zones and a DST switch, bad entries refused and counted, the
window's edges, the worker's ``news_window`` skip and its decision record."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from factories import NOW_MS
from factories import domain_signal as signal

from mt5fleet.proto.domain import calendar
from mt5fleet.proto.domain.calendar import Calendar, CalendarEvent, Impact, NewsWindow, blocking_event
from mt5fleet.proto.domain.trading import CommandType
from mt5fleet.workers.adapters import decisions
from mt5fleet.workers.adapters.calendar_source import FileCalendarSource
from mt5fleet.workers.app.calendar_service import CalendarService
from mt5fleet.workers.core.decision import decide
from mt5fleet.workers.core.policy import SkipReason, UserPolicy, UserState, first_skip

FIXTURES = Path(__file__).parent / "fixtures" / "calendar"
MIN = 60_000


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)


NFP = utc(2026, 3, 6, 13, 30)        # 08:30 New York, EST (UTC-5)
CPI = utc(2026, 3, 11, 12, 30)       # 08:30 New York, EDT (UTC-4): after the US switch of 8 March
BOE = utc(2026, 3, 19, 12, 0)        # 12:00 London, GMT (the UK switches on 29 March)


def read(name: str) -> calendar.Parsed:
    path = FIXTURES / name
    return calendar.parse(path.read_bytes(), calendar.format_of(path.name))


# ----------------------------------------------------------------------------- formats

def test_the_weekly_json_export_reads_offsets_across_the_dst_switch_and_refuses_bad_entries():
    parsed = read("ff_calendar_thisweek.json")
    high = {(e.currency, e.title): e.at_ms for e in parsed.events if e.impact is Impact.HIGH}
    assert high[("USD", "Non-Farm Employment Change")] == NFP
    assert high[("USD", "CPI m/m")] == CPI
    assert high[("GBP", "Official Bank Rate")] == BOE
    assert {e.impact for e in parsed.events} == {Impact.HIGH, Impact.LOW, Impact.HOLIDAY}
    assert parsed.untimed == 1   # a date without a time: no instant, no window
    assert len(parsed.refused) == 3
    assert any("entry 6" in r and "'US Dollar' is not a three-letter code" in r for r in parsed.refused)
    assert any("entry 7" in r and "no UTC offset" in r for r in parsed.refused)
    assert any("entry 8" in r and "unknown impact 'Catastrophic'" in r for r in parsed.refused)


def test_the_xml_export_is_gmt_and_gives_the_same_instants():
    parsed = read("ff_calendar_thisweek.xml")
    assert [(e.currency, e.at_ms) for e in parsed.events] == [("USD", NFP), ("USD", CPI)]
    assert parsed.untimed == 1 and len(parsed.refused) == 1 and "not MM-DD-YYYY" in parsed.refused[0]


def test_icalendar_with_time_zones_utc_and_folded_lines():
    parsed = read("economic.ics")
    got = {(e.currency, e.title, e.impact): e.at_ms for e in parsed.events}
    assert got == {("USD", "Non-Farm Employment Change", Impact.HIGH): NFP,   # TZID=America/New_York, folded
                   ("USD", "CPI m/m", Impact.HIGH): CPI,                       # Z, currency from CATEGORIES
                   ("GBP", "Official Bank Rate", Impact.HIGH): BOE}            # TZID=Europe/London, PRIORITY 1
    assert parsed.untimed == 1
    assert sorted(r.split(": ", 1)[1] for r in parsed.refused) == [
        "DTSTART '20260306T100000' is floating (no Z, no TZID): its instant is unknown",
        "TZID 'Mars/Olympus' is not a time zone the IANA database knows"]


@pytest.mark.parametrize("text, fmt, problem", [
    ("{", "ff-json", "not JSON|unreadable"), ('{"a": 1}', "ff-json", "must be a list"),
    ('<!DOCTYPE x [<!ENTITY a "b">]><weeklyevents/>', "ff-xml", "DOCTYPE"),
    ("<calendar/>", "ff-xml", "expected <weeklyevents>"), ("hello", "ical", "BEGIN:VCALENDAR"),
    ("[]", "csv", "unknown calendar format"),
])
def test_a_document_that_is_no_calendar_is_refused_as_a_whole(text, fmt, problem):
    with pytest.raises(calendar.CalendarError, match=problem):
        calendar.parse(text, fmt)


def test_the_kv_form_round_trips_and_refuses_bad_entries_keeping_the_rest():
    cal = Calendar(read("ff_calendar_thisweek.json").events, source="file", fetched_at_ms=NFP)
    back, refused = calendar.from_json(calendar.to_json(cal))
    assert back == cal and refused == ()
    raw = calendar.to_json(cal).replace(b'"currency":"GBP"', b'"currency":"??"')
    back, refused = calendar.from_json(raw)
    assert len(back.events) == len(cal.events) - 1 and len(refused) == 1 and "'??'" in refused[0]
    with pytest.raises(calendar.CalendarError):
        calendar.from_json(b'{"version": 99}')


# ----------------------------------------------------------------------------- windows

EVENTS = Calendar((CalendarEvent(NFP, "USD", Impact.HIGH, "Non-Farm Employment Change"),
                   CalendarEvent(NFP + 60 * MIN, "EUR", Impact.MEDIUM, "ECB Speech"),
                   CalendarEvent(BOE, "GBP", Impact.HIGH, "Official Bank Rate")))


@pytest.mark.parametrize("offset_ms, blocked", [
    (-15 * MIN - 1, False), (-15 * MIN, True), (0, True), (15 * MIN, True), (15 * MIN + 1, False)])
def test_the_window_is_15_minutes_either_side_edges_included(offset_ms, blocked):
    assert (blocking_event(EVENTS, "EURUSD", NFP + offset_ms) is not None) is blocked


def test_base_or_quote_currency_only_high_impact_and_a_configurable_window():
    assert blocking_event(EVENTS, "USDJPY", NFP) is not None          # USD as the base
    assert blocking_event(EVENTS, "EURGBP", NFP) is None              # neither currency
    assert blocking_event(EVENTS, "EURJPY", NFP + 60 * MIN) is None   # medium impact: no window
    assert blocking_event(EVENTS, "GBPNZD", BOE) is not None          # a pair outside the table: split in two
    assert blocking_event(EVENTS, "US30", NFP) is None                # an index names no currency
    wide = NewsWindow(before_ms=30 * MIN, after_ms=5 * MIN)
    assert blocking_event(EVENTS, "EURUSD", NFP - 30 * MIN, wide) is not None
    assert blocking_event(EVENTS, "EURUSD", NFP + 6 * MIN, wide) is None
    with pytest.raises(ValueError, match="before_ms"):
        NewsWindow(before_ms=-1)


# ----------------------------------------------------------------------------- the worker's gate

def state(allow: bool, cal: Calendar = EVENTS) -> UserState:
    policy = UserPolicy(user_id="alice", trading_symbols=frozenset({"EURUSD"}), allow_news_trading=allow)
    return UserState(policy=policy, calendar=cal)


def near(now: int) -> Calendar:
    return Calendar((CalendarEvent(now + 10 * MIN, "USD", Impact.HIGH, "FOMC Statement"),))


def test_a_user_with_news_trading_off_is_skipped_news_window_and_others_are_not():
    skip = first_skip(signal(), state(False, near(NOW_MS)), NOW_MS)
    assert skip is not None and skip.reason is SkipReason.NEWS_WINDOW and skip.reason.value == "news_window"
    assert "USD FOMC Statement" in skip.detail and "15 min before to 15 min after" in skip.detail
    other = first_skip(signal(), state(True, near(NOW_MS)), NOW_MS)
    assert other is None or other.reason is not SkipReason.NEWS_WINDOW


def test_open_positions_are_not_touched_closes_pass_the_window():
    close = signal(action=CommandType.CLOSE_POSITION, target_signal_id="sig-0")
    skip = first_skip(close, state(False, near(NOW_MS)), NOW_MS)
    assert skip is None or skip.reason is not SkipReason.NEWS_WINDOW


def test_the_decision_record_keeps_the_calendar_and_recomputes_the_skip():
    user = state(False, near(NOW_MS))
    decision = decide(signal(), user, NOW_MS)
    assert decision.skip_reason == "news_window"
    record = decisions.record_message(decision)
    assert record.policy.allow_news_trading is False and [e.title for e in record.news.events] == ["FOMC Statement"]
    again = decisions.decision_of_record(record)
    assert decide(again.inputs.signal, again.inputs.state, NOW_MS).skip_reason == "news_window"


def test_a_policy_from_the_config_carries_allow_news_trading():
    from mt5fleet.proto.domain.config import ClientConfig, RiskProfile
    from mt5fleet.workers.core.policy import policy_from_config

    config = ClientConfig(user_id="alice", risk=RiskProfile(allow_news_trading=False))
    assert policy_from_config(config).allow_news_trading is False


# ----------------------------------------------------------------------------- the calendar worker

class FakeKv:
    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []

    async def put(self, key: str, value: bytes) -> None:
        self.puts.append((key, value))


def test_the_calendar_worker_keeps_high_impact_events_counts_refusals_and_puts_once(monkeypatch):
    kv = FakeKv()

    class Js:
        async def key_value(self, bucket: str) -> FakeKv:
            assert bucket == "calendar"
            return kv

    class Nc:
        is_connected = True

        def jetstream(self) -> Js:
            return Js()

    async def created(*args, **kwargs):
        return None

    monkeypatch.setattr("mt5fleet.proto.runtime.bootstrap.create_missing", created)
    service = CalendarService(Nc(), FileCalendarSource(FIXTURES / "ff_calendar_thisweek.json"),
                              now_ms=lambda: NFP - 60 * MIN)
    result = asyncio.run(service.refresh_once())
    assert result is not None and {e.impact for e in result.events} == {Impact.HIGH}
    assert [key for key, _ in kv.puts] == ["events"]
    assert service.metrics.refused._value.get() == 3 and service.metrics.untimed._value.get() == 1
    asyncio.run(service.refresh_once())   # unchanged: not put again
    assert len(kv.puts) == 1
    broken = CalendarService(Nc(), FileCalendarSource(FIXTURES / "missing.json"))
    assert asyncio.run(broken.refresh_once()) is None
    assert broken.metrics.refreshes.labels("error")._value.get() == 1


# ----------------------------------------------------------------------------- the agent's refusal

def test_the_agent_refuses_an_open_inside_the_window_and_lets_closes_through():
    from mt5fleet.client.core.risk import RejectCode, RiskContext, RiskLimits, check
    from mt5fleet.proto.domain.market import SymbolSpecInfo
    from mt5fleet.proto.domain.sessions import market_state
    from mt5fleet.proto.domain.trading import Command, OrderType

    now = utc(2024, 1, 9, 15)   # Tuesday 10:00 New York: open, far from the rollover
    spec = SymbolSpecInfo(symbol="EURUSD", broker_symbol="EURUSD", digits=5, point=0.00001, contract_size=100_000,
                          tick_size=0.00001, tick_value=1.0, volume_min=0.01, volume_max=100.0, volume_step=0.01,
                          filling_modes=1)

    def ctx(at: int, cal: Calendar) -> RiskContext:
        return RiskContext(now_ms=at, equity=10_000.0, balance=10_000.0, day_start_equity=10_000.0,
                           peak_equity=10_000.0, open_positions=0, symbol_positions=0, bid=1.085, ask=1.08512,
                           spread_points=12.0, spec=spec, market=market_state(at), calendar=cal)

    def command(kind: CommandType = CommandType.OPEN_POSITION) -> Command:
        opens = kind is CommandType.OPEN_POSITION
        return Command(command_id="mf1000000000000000000000001", user_id="alice", type=kind, symbol="EURUSD",
                       order_type=OrderType.BUY, lot_size=0.10 if opens else 0.0,
                       entry_price=1.08512 if opens else None,
                       stop_loss=1.08012 if opens else None, take_profit=1.09512 if opens else None,
                       position_ticket=None if opens else 5001, created_at_ms=now - 1_000, expires_at_ms=now + 60_000)

    fomc = Calendar((CalendarEvent(now + 15 * MIN, "USD", Impact.HIGH, "FOMC Statement"),))
    off = RiskLimits(trading_symbols={"EURUSD"}, max_risk_per_trade_pct=1.0, allow_news_trading=False)
    on = RiskLimits(trading_symbols={"EURUSD"}, max_risk_per_trade_pct=1.0)
    refused = check(command(), off, ctx(now, fomc))
    assert not refused.allowed and refused.code is RejectCode.NEWS_WINDOW and "FOMC Statement" in refused.reason
    assert check(command(), off, ctx(now - 1, fomc)).allowed                          # 15 min + 1 ms before
    assert check(command(), on, ctx(now, fomc)).allowed                                # news trading allowed
    assert check(command(CommandType.CLOSE_POSITION), off, ctx(now, fomc)).allowed     # open positions untouched


def test_the_agent_takes_allow_news_trading_from_the_server_config():
    from mt5fleet.client.core.effective import from_client_config
    from mt5fleet.client.core.settings import LocalRiskLimits, SymbolSettings
    from mt5fleet.proto.domain.config import ClientConfig, RiskProfile

    config = ClientConfig(user_id="alice", trading_symbols=("EURUSD",), risk=RiskProfile(allow_news_trading=False))
    assert from_client_config(config, LocalRiskLimits(), SymbolSettings()).limits.allow_news_trading is False
