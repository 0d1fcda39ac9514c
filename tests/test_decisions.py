"""Decision records (issue 11, item 4): every (signal, user) decided once and kept with what
decided it, so that "why did this user get 0.34 lots, or nothing?" has an answer later.

First the record alone against the pure adjustment: encoded to the wire and back, its inputs
recompute the same commands (or the same skip), and it holds the quotes that were read, the
conversion quote included, and no others. Then the real worker against a real nats-server:
one record per (signal, user), skips with their reasons, commands equal to their records'
even when the signal is delivered again after the user's quote moved.
"""

from __future__ import annotations

import asyncio
import dataclasses

import nats
import pytest
from decision_fleet import USERS, commands_of, eurusd, now_ms, records_of, running_fleet, settled
from factories import NOW_MS, fleet_signal
from factories import domain_signal as signal
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import wait_for

from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.reconcile import access_for
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.account import AccountSnapshot
from mt5fleet.proto.domain.config import SizingMode
from mt5fleet.proto.domain.market import Quote, SymbolSpecInfo
from mt5fleet.proto.domain.trading import CommandType, OrderType
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import commands_pb2, decision_pb2
from mt5fleet.proto.validation import check_signal
from mt5fleet.workers.adapters import decision_store, decisions, streams
from mt5fleet.workers.adapters.decisions import decision_of_record, record_message
from mt5fleet.workers.adapters.wire import command_message
from mt5fleet.workers.core.adjust import Adjusted, Skip
from mt5fleet.workers.core.decision import Decision, decide, recompute
from mt5fleet.workers.core.policy import UserPolicy, UserState
from mt5fleet.workers.core.sizing_inputs import SizingInputs

NOW = NOW_MS  # Tuesday 17:13:20 New York: the market is open, the rollover is over


# ----------------------------------------------------------------------------- builders

def quote(symbol: str, bid: float, ask: float, *, age_ms: int = 300, digits: int = 5) -> Quote:
    return Quote(symbol=symbol, bid=bid, ask=ask, time_ms=NOW - age_ms, spread_points=round((ask - bid) * 10**digits),
                 broker_symbol=f"{symbol}.m", digits=digits, broker_server="Broker-Live")


def spec(symbol: str, **overrides: object) -> SymbolSpecInfo:
    fields: dict[str, object] = dict(
        symbol=symbol, broker_symbol=f"{symbol}.m", digits=5, point=0.00001, contract_size=100_000.0,
        tick_size=0.00001, tick_value=1.0, volume_min=0.01, volume_max=100.0, volume_step=0.01, stops_level=10,
        currency_base=symbol[:3], currency_profit=symbol[3:], currency_margin=symbol[:3])
    if symbol.endswith("JPY"):
        fields.update(digits=3, point=0.001, tick_size=0.001, tick_value=0.67)
    fields.update(overrides)
    return SymbolSpecInfo(**fields)  # type: ignore[arg-type]


QUOTES = {"EURUSD": quote("EURUSD", 1.08503, 1.08515), "GBPUSD": quote("GBPUSD", 1.26500, 1.26515),
          "USDJPY": quote("USDJPY", 149.500, 149.512, digits=3), "EURJPY": quote("EURJPY", 162.200, 162.215, digits=3)}
SPECS = {symbol: spec(symbol) for symbol in QUOTES}


def user(*, currency: str = "USD", equity: float = 10_000.0, quotes: dict[str, Quote] | None = None,
         positions: dict[str, tuple[tuple[str, int], ...]] | None = None, volumes: dict[int, float] | None = None,
         **policy: object) -> UserState:
    policy.setdefault("trading_symbols", frozenset(QUOTES))
    policy.setdefault("tier_name", "pro")
    account = AccountSnapshot(user_id="alice", account_number="5012345", currency=currency, balance=equity,
                              equity=equity, margin_used=0.0, margin_free=equity, time_ms=NOW - 4_000, leverage=100)
    return UserState(policy=UserPolicy(user_id="alice", **policy),  # type: ignore[arg-type]
                     quotes=quotes or QUOTES, specs=SPECS, account=account, positions_by_signal=positions or {},
                     position_volumes=volumes or {})


def through_the_wire(decision: Decision) -> decision_pb2.DecisionRecord:
    raw = record_message(decision, worker_version="0.1.0", worker_replica="r1").SerializeToString()
    return decision_pb2.DecisionRecord.FromString(raw)


def recomputed(record: decision_pb2.DecisionRecord) -> list[commands_pb2.TradingCommand] | tuple[str, str]:
    """What the record's inputs alone give today: the commands' wire form, or (skip, detail)."""
    result = recompute(decision_of_record(record).inputs)
    if isinstance(result, Skip):
        return result.reason.value, result.detail
    assert isinstance(result, Adjusted)
    return [command_message(c) for c in result.commands]


OPENED = (("mf1000000000000000000000001", 101), ("mf1000000000000000000000002", 102))
EURJPY = dict(symbol="EURJPY", reference_bid=162.190, reference_ask=162.205, stop_loss=161.705, take_profit=163.205)

CASES = {
    "market buy on a USD account": (signal(), user()),
    "JPY profit converted through the user's USDJPY": (signal(**EURJPY), user()),
    "USD profit on a JPY account": (signal(), user(currency="JPY", equity=1_500_000.0)),
    "sell limit, shifted by the broker differential": (
        signal(order_type=OrderType.SELL_LIMIT, entry=1.08700, stop_loss=1.09200, take_profit=1.07700), user()),
    "fixed lot, conservative, capped": (signal(), user(sizing_mode=SizingMode.FIXED_LOT, preferred_lot_size=3.0,
                                                      conservative_mode=True, max_lot=1.0)),
    "equity multiplier": (signal(), user(sizing_mode=SizingMode.EQUITY_MULTIPLIER, sizing_value=0.05)),
    "close half of two positions": (
        signal(action=CommandType.CLOSE_POSITION, target_signal_id="sig-open", close_fraction=0.5, stop_loss=None,
               take_profit=None), user(positions={"sig-open": OPENED}, volumes={101: 0.3, 102: 0.1})),
    "modify the stop of two positions": (
        signal(action=CommandType.MODIFY_POSITION, target_signal_id="sig-open", stop_loss=1.08100, take_profit=None),
        user(positions={"sig-open": OPENED})),
    "close every EURUSD position": (signal(action=CommandType.CLOSE_ALL, stop_loss=None, take_profit=None), user()),
}


# ----------------------------------------------------------------------------- the record alone

@pytest.mark.parametrize("case", CASES)
def test_a_records_inputs_alone_recompute_the_same_commands(case):
    sig, state = CASES[case]
    decision = decide(sig, state, NOW)
    assert decision.commands and not decision.skipped, decision.skip_detail
    record = through_the_wire(decision)
    assert list(record.commands) == [command_message(c) for c in decision.commands]
    assert recomputed(record) == list(record.commands)
    assert decision_of_record(record) == decision  # nothing lost on the way


def test_the_record_holds_the_quotes_read_the_conversion_included_and_no_others():
    usd = through_the_wire(decide(signal(), user(), NOW))
    assert [q.symbol for q in usd.quotes] == ["EURUSD"]  # the user's GBPUSD, USDJPY played no part
    jpy = through_the_wire(decide(signal(**EURJPY), user(), NOW))
    assert sorted(q.symbol for q in jpy.quotes) == ["EURJPY", "USDJPY"]
    assert [s.symbol for s in jpy.specs] == ["EURJPY"] and len(jpy.spec_version) == 12
    assert (jpy.quote_age_ms, jpy.account.equity, jpy.account.base_currency, jpy.account.leverage) == (
        300, 10_000.0, "USD", 100)
    assert jpy.specs[0].broker_symbol == "EURJPY.m" and jpy.quotes[0].broker_symbol  # the symbol mapping
    assert jpy.policy.tier_name == "pro" and jpy.policy.max_risk_per_trade_pct > 0
    assert jpy.notes and jpy.worker_version == "0.1.0"  # how the lot was sized, in words
    # ... and in figures: the risk, the tick value and the conversion that made it.
    assert (jpy.sizing.risk_pct, jpy.sizing.equity, jpy.sizing.account_currency) == (
        jpy.policy.max_risk_per_trade_pct, 10_000.0, "USD")
    assert [(c.pair, c.source, c.target) for c in jpy.sizing.conversions] == [("USDJPY", "JPY", "USD")]
    assert jpy.sizing.tick_value > 0 and jpy.sizing.lots == jpy.commands[0].lot_size


@pytest.mark.parametrize(("reason", "sig", "state"), [
    ("wide_spread", signal(), user(max_spread_points=5)),
    ("stale_quote", signal(), user(quotes={**QUOTES, "EURUSD": quote("EURUSD", 1.08503, 1.08515, age_ms=9_000)})),
    ("symbol_not_traded", signal(), user(trading_symbols=frozenset({"GBPUSD"}))),
    ("paused", signal(), user(paused=True)),
    ("no_position", signal(action=CommandType.CLOSE_POSITION, target_signal_id="sig-gone", stop_loss=None,
                           take_profit=None), user()),
])
def test_a_skip_is_recorded_with_its_reason_and_recomputes(reason, sig, state):
    record = through_the_wire(decide(sig, state, NOW))
    assert (record.skip_reason, list(record.commands)) == (reason, [])
    assert record.skip_detail and recomputed(record) == (reason, record.skip_detail)


def test_a_user_whose_state_breaks_the_adjustment_gets_an_error_record():
    broken = user()
    broken = UserState(policy=broken.policy, quotes=broken.quotes, specs={"EURUSD": spec("EURUSD", volume_step=0.0)},
                       account=broken.account)
    record = through_the_wire(decide(signal(), broken, NOW))
    assert record.skip_reason == "error" and record.skip_detail and not record.commands


def test_a_record_carries_the_users_current_policy_and_account_and_keeps_no_replaced_one():
    """Encoded policies are kept one per user: a config change re-encodes and replaces, so
    neither a stale policy reaches a record nor do replaced ones pile up (the soak's census
    found 14 policies and 59 account snapshots per user kept alive after 10 minutes)."""
    sig, state = signal(), user()
    cache = decisions._policy_message
    for n in range(50):
        policy = dataclasses.replace(state.policy, max_lot=1.0 + n)
        account = dataclasses.replace(state.account, equity=10_000.0 + n)
        record = record_message(decide(sig, dataclasses.replace(state, policy=policy, account=account), NOW))
        assert (record.policy.max_lot, record.account.equity) == (1.0 + n, 10_000.0 + n)
    assert [value.max_lot for key, (value, _) in cache.cache.items() if key == "alice"] == [50.0]


def test_every_input_adjust_can_read_and_every_sizing_figure_has_a_place_in_the_record():
    """A field added to the user's state, policy or sizing figures must be added to the record
    too, or records would silently stop recomputing: this fails first, naming it."""
    assert {f.name for f in dataclasses.fields(UserState)} == {
        "policy", "quotes", "specs", "account", "stopped_out", "positions_by_signal", "position_volumes",
        "calendar", "news_window"}
    assert {f.name for f in dataclasses.fields(UserPolicy)} - {"user_id"} == set(
        decision_pb2.DecisionPolicy.DESCRIPTOR.fields_by_name)
    sizing = {f.name for f in dataclasses.fields(SizingInputs)}
    assert {decisions.SIZING_WIRE_NAMES.get(name, name) for name in sizing} == set(
        decision_pb2.DecisionSizing.DESCRIPTOR.fields_by_name)


def test_no_export_grant_or_import_of_a_tenant_reaches_a_decision_record():
    """Only the platform reads decisions: no platform export, no tenant import or permission
    matches one, not even the user's own."""
    subject = subjects.decision_subject("alice", "sig-1")
    access = access_for("alice", ("EURUSD",), DEFAULT_TIERS["enterprise"])
    patterns = (*(export.subject for export in tenancy.platform_exports()),
                *(imported for imported, _ in tenancy.tenant_subjects("alice", access.md_symbols)),
                *access.tenant_permissions.pub.allow, *access.tenant_permissions.sub.allow)
    assert patterns and not [p for p in patterns if subjects.matches(p, subject)]


@settings(max_examples=150, deadline=None)
@given(offset=st.integers(-40, 40), spread=st.integers(0, 30), equity=st.floats(50, 5_000_000),
       risk=st.floats(0.05, 5), sell=st.booleans(), sl_points=st.integers(20, 3_000), age=st.integers(0, 1_900))
def test_any_market_order_recomputes_from_its_record(offset, spread, equity, risk, sell, sl_points, age):
    bid = round(1.08490 + offset * 1e-5, 5)
    quotes = {**QUOTES, "EURUSD": quote("EURUSD", bid, round(bid + spread * 1e-5, 5), age_ms=age)}
    ref = 1.08490 if sell else 1.08500
    sl = round(ref + (1 if sell else -1) * sl_points * 1e-5, 5)
    sig = signal(order_type=OrderType.SELL if sell else OrderType.BUY, stop_loss=sl, take_profit=None)
    record = through_the_wire(decide(sig, user(equity=equity, quotes=quotes, max_risk_per_trade_pct=risk), NOW))
    expected = list(record.commands) or (record.skip_reason, record.skip_detail)
    assert recomputed(record) == expected


# ----------------------------------------------------------------------------- the worker, for real

@pytest.fixture
async def fleet(fresh_nats_server):
    async with running_fleet(fresh_nats_server.url) as (js, worker):
        yield js, worker


async def test_the_worker_records_every_user_once_with_commands_equal_to_their_records(fleet):
    js, worker = fleet
    await js.publish(subjects.signal_subject("EURUSD"), fleet_signal("sig-1", now_ms()).SerializeToString(),
                     headers={"Nats-Msg-Id": "sig-1"})
    await wait_for(lambda: settled(js, worker, 1), "every partition done with the signal")
    records, commands = await records_of(js), await commands_of(js)
    assert set(records) == set(USERS) and set(commands) == {"alice", "dave"}
    for user_id, command in commands.items():
        assert list(records[user_id].commands) == [command]
        assert recomputed(records[user_id]) == [command]  # from the stored record alone
    assert (records["bob"].skip_reason, records["carol"].skip_reason) == ("paused", "wide_spread")
    assert "spread is 12 points, the maximum is 5" in records["carol"].skip_detail
    assert recomputed(records["carol"]) == ("wide_spread", records["carol"].skip_detail)
    assert sorted(q.symbol for q in records["dave"].quotes) == ["EURUSD", "USDJPY"]  # the conversion used
    assert records["dave"].account.base_currency == "JPY" and records["alice"].worker_replica == "solo"
    assert worker.metrics.decisions.labels("stored")._value.get() == len(USERS)


async def test_a_signal_decided_before_gets_the_recorded_commands_and_no_second_record(fleet):
    """A replica stored alice's record and died before her command left; her broker moved since.
    The signal's next delivery publishes the *recorded* command, and a redelivery after that
    (the partitions' consumers starting over) adds no record and no command."""
    js, worker = fleet
    sig = fleet_signal("sig-2", now_ms())
    previous = decide(check_signal(sig, now_ms()), worker.state.user_state("alice"), now_ms())
    await decision_store.DecisionStore(js, worker_replica="died").record(previous)
    await js.publish(subjects.user_subject("alice", subjects.Channel.PRICES), eurusd("alice", 1.10031)
                     .SerializeToString())
    await wait_for(lambda: worker.state.quotes["alice"]["EURUSD"].bid == 1.10031, "the worker seeing the new quote")
    await js.publish(subjects.signal_subject("EURUSD"), sig.SerializeToString(), headers={"Nats-Msg-Id": "sig-2"})
    await wait_for(lambda: settled(js, worker, 1), "every partition done with the signal")
    first, commands = await records_of(js), await commands_of(js)
    assert first["alice"].worker_replica == "died" and first["bob"].worker_replica == "solo"
    assert commands["alice"] == first["alice"].commands[0] and commands["alice"].quote_bid == 1.10001
    resent: list[bytes] = []  # what an agent's live subscription would see again

    async def hear(msg) -> None:
        resent.append(msg.data)

    live = await js._nc.subscribe(subjects.user_wildcard(subjects.Channel.COMMANDS), cb=hear)
    for partition in range(subjects.ADJUST_PARTITIONS):
        await js.delete_consumer(subjects.SIGNALS_STREAM, subjects.adjust_consumer(partition))
    await bootstrap.bootstrap(js, subjects.build_layout())
    await wait_for(lambda: settled(js, worker, 2), "every partition done with the signal a second time", timeout=20)
    await live.unsubscribe()
    assert resent == []  # stored commands are not published again
    info = await js.stream_info(subjects.DECISIONS_STREAM, subjects_filter=">")
    assert info.state.messages == len(USERS) and set(info.state.subjects.values()) == {1}
    assert await records_of(js) == first and await commands_of(js) == commands
    assert (await js.stream_info(subjects.COMMANDS_STREAM)).state.messages == len(commands) == 2
    # alice's first delivery and every user's second found their (signal, user) decided
    assert worker.metrics.decisions.labels("existing")._value.get() == 1 + len(USERS)


async def test_a_redelivery_to_more_users_than_a_stream_takes_consumers_gets_each_its_unstored_commands(
        fresh_nats_server):
    """A replica stored 1,200 users' records (more than the 1,000 consumers nats-server allows
    on a stream) and died after publishing half their commands. The signal's redelivery, in
    the fan-out's concurrent chunks, learns every (signal, user) is decided and gets exactly
    the commands not stored yet: one scan of TC_COMMANDS per chunk, not one per user (which
    failed with "maximum consumers limit reached", the whole partition again each time)."""
    nc = await nats.connect(fresh_nats_server.url)
    js = nc.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    base, sig = user(), signal()
    states = [dataclasses.replace(base, policy=dataclasses.replace(base.policy, user_id=f"u{n:04d}"))
              for n in range(1_200)]
    decided = [decide(sig, state, NOW) for state in states]
    chunks = [decided[start:start + 64] for start in range(0, len(decided), 64)]
    outcomes: list[str] = []
    store = decision_store.DecisionStore(js, worker_replica="died", on_recorded=outcomes.append)
    batch = streams.BatchPublisher(nc)
    try:
        first = [r for chunk in await asyncio.gather(*(store.record_many(c, batch.publish_many) for c in chunks))
                 for r in chunk]
        assert outcomes == [decision_store.STORED] * 1_200
        for commands in first[::2]:   # the died replica's half
            await js.publish(subjects.user_subject(commands[0].user_id, subjects.Channel.COMMANDS),
                             commands[0].SerializeToString(), headers={"Nats-Msg-Id": commands[0].command_id})
        outcomes.clear()
        again = [r for chunk in await asyncio.gather(*(store.record_many(c, batch.publish_many) for c in chunks))
                 for r in chunk]
    finally:
        await batch.close()
        await nc.close()
    assert not [r for r in again if isinstance(r, BaseException)]
    assert outcomes == [decision_store.EXISTING] * 1_200
    assert again[::2] == [[]] * 600 and again[1::2] == first[1::2]   # only what is not stored yet
