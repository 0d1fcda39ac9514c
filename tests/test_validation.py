"""Validation at the edge: every inbound message kind, every rule, and properties.

factories.py sits beside this file; the tests run with --import-mode=importlib and
there is no tests package, so this folder is put on sys.path to import it.
"""

from __future__ import annotations

import math
import pickle
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt5fleet.proto.domain.market import Quote
from mt5fleet.proto.domain.trading import CommandType, ExecutionStatus, OrderType
from mt5fleet.proto.domain.violations import Violation
from mt5fleet.proto.subjects import SYMBOL_RE
from mt5fleet.proto.v1 import (
    account_pb2,
    commands_pb2,
    execution_pb2,
    heartbeat_pb2,
    market_data_pb2,
    prices_pb2,
    signals_pb2,
    symbols_pb2,
)
from mt5fleet.proto.validation import (
    Limits,
    ValidationError,
    check_account,
    check_command,
    check_execution,
    check_heartbeat,
    check_market_data,
    check_price_batch,
    check_signal,
    check_symbol_specs,
    decode,
)

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import factories as f  # noqa: E402
from factories import NOW_MS  # noqa: E402

NAN, INF = math.nan, math.inf
BAD_PRICES = [NAN, INF, -INF, 0.0, -1.0, 1e8]
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def violations(check, msg, **kwargs) -> list[Violation]:
    """The violations a check raises; fails the test if it accepts the message."""
    with pytest.raises(ValidationError) as info:
        check(msg, NOW_MS, **kwargs)
    return list(info.value.violations)


def fields_of(check, msg, **kwargs) -> set[str]:
    return {v.field for v in violations(check, msg, **kwargs)}


def reason(check, msg, field: str) -> str:
    found = [v.reason for v in violations(check, msg) if v.field == field]
    assert found, f"no violation on {field}"
    return found[0]


# ------------------------------------------------------------ Violation and the error


def test_violation_str_is_field_colon_reason():
    v = Violation("prices[3].ask", "ask 1.0 is below bid 1.1")
    assert str(v) == "prices[3].ask: ask 1.0 is below bid 1.1"


def test_validation_error_names_kind_and_every_violation():
    err = ValidationError("UniversalSignal", [Violation("a", "bad a"), Violation("b", "bad b")])
    assert isinstance(err, ValueError)
    assert err.kind == "UniversalSignal"
    assert err.violations == (Violation("a", "bad a"), Violation("b", "bad b"))
    assert "UniversalSignal" in str(err) and "a: bad a" in str(err) and "b: bad b" in str(err)


def test_validation_error_survives_pickling():
    err = ValidationError("Heartbeat", [Violation("user_id", "empty")])
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.violations, str(back)) == (err.kind, err.violations, str(err))


def test_domain_values_are_frozen():
    quote = Quote("EURUSD", 1.1, 1.2, NOW_MS, 10.0)
    with pytest.raises(FrozenInstanceError):
        quote.bid = 2.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- limits


def test_limits_defaults():
    limits = Limits()
    assert (limits.max_quotes_per_batch, limits.max_future_skew_ms, limits.max_lot,
            limits.max_price) == (1000, 5_000, 1000.0, 1e7)
    assert limits.max_past_age_ms == 7 * 86_400_000


@pytest.mark.parametrize("bad", [0, -1, NAN])
def test_limits_refuse_non_positive_values(bad):
    with pytest.raises(ValueError, match="max_lot"):
        Limits(max_lot=bad)


def test_limits_are_overridable():
    batch = f.price_batch(batch_timestamp=NOW_MS + 60_000)
    assert fields_of(check_price_batch, batch) == {"batch_timestamp"}
    check_price_batch(batch, NOW_MS, Limits(max_future_skew_ms=120_000))


# ----------------------------------------------------------------------------- decode


def test_decode_round_trips_a_valid_message():
    msg = f.signal()
    assert decode(signals_pb2.UniversalSignal, msg.SerializeToString()) == msg


def test_decode_refuses_oversize_payload_before_parsing():
    payload = f.price_batch().SerializeToString()
    with pytest.raises(ValidationError) as info:
        decode(prices_pb2.ClientPriceStream, payload, Limits(max_payload_bytes=10))
    assert info.value.kind == "ClientPriceStream"
    (v,) = info.value.violations
    assert v.field == "<payload>" and f"{len(payload)} bytes" in v.reason


@pytest.mark.parametrize("payload", [b"\x12\x02\xff\xfe", b"\x0a\x05ab", b"\xff\xff\xff"])
def test_decode_refuses_unparsable_bytes(payload):
    with pytest.raises(ValidationError) as info:
        decode(signals_pb2.UniversalSignal, payload)
    assert info.value.kind == "UniversalSignal"
    assert [v.field for v in info.value.violations] == ["<payload>"]


MESSAGE_TYPES = [signals_pb2.UniversalSignal, commands_pb2.TradingCommand,
                 execution_pb2.ExecutionReport, account_pb2.AccountProfile,
                 symbols_pb2.SymbolSpecList, heartbeat_pb2.Heartbeat,
                 prices_pb2.ClientPriceStream, market_data_pb2.ClientMarketData]


@FAST
@given(message_type=st.sampled_from(MESSAGE_TYPES), payload=st.binary(max_size=300))
def test_decode_of_random_bytes_raises_only_validation_error(message_type, payload):
    try:
        msg = decode(message_type, payload)
    except ValidationError as err:
        assert err.violations and err.violations[0].field == "<payload>"
    else:
        assert isinstance(msg, message_type)


# ------------------------------------------------------------------------ price batch


def test_valid_batch_keeps_every_quote_exactly():
    checked = check_price_batch(f.price_batch(), NOW_MS)
    assert checked.rejected == ()
    batch = checked.batch
    assert (batch.user_id, batch.broker_name, batch.account_number, batch.sent_at_ms,
            batch.sequence) == ("alice", "Example Markets Ltd", "5012345", NOW_MS - 50, 42)
    assert batch.quote("EURUSD") == Quote(
        symbol="EURUSD", bid=f.BID, ask=f.ASK, time_ms=NOW_MS - 200, spread_points=12.0,
        broker_symbol="EURUSD.m", digits=5, broker_server="Broker-Demo")
    assert batch.symbols == ("EURUSD", "GBPUSD")


def test_ask_below_bid_drops_that_quote_only():
    batch = f.price_batch(prices=[f.price(), f.price(symbol="GBPUSD", bid=1.1, ask=1.0)])
    checked = check_price_batch(batch, NOW_MS)
    assert checked.batch.symbols == ("EURUSD",)
    assert [str(v) for v in checked.rejected] == ["prices[1].ask: ask 1.0 is below bid 1.1"]


def test_empty_batch_is_valid():
    assert check_price_batch(f.price_batch(prices=[]), NOW_MS).batch.quotes == ()


@pytest.mark.parametrize("overrides, field", [
    ({"symbol": "eurusd"}, "symbol"),
    ({"symbol": "EURUSD.m"}, "symbol"),
    ({"symbol": ""}, "symbol"),
    ({"symbol": "EURUSD\n"}, "symbol"),
    ({"timestamp": 0}, "timestamp"),
    ({"timestamp": NOW_MS + 5_001}, "timestamp"),
    ({"timestamp": NOW_MS - 8 * 86_400_000}, "timestamp"),
    ({"spread": -1.0}, "spread"),
    ({"digits": 11}, "digits"),
    ({"broker_symbol": "x" * 2000}, "broker_symbol"),
])
def test_bad_quote_field_is_rejected_with_its_path(overrides, field):
    checked = check_price_batch(f.price_batch(prices=[f.price(**overrides)]), NOW_MS)
    assert checked.batch.quotes == ()
    assert {v.field for v in checked.rejected} == {f"prices[0].{field}"}


def test_timestamp_just_inside_the_skew_is_accepted():
    batch = f.price_batch(prices=[f.price(timestamp=NOW_MS + 5_000)])
    assert len(check_price_batch(batch, NOW_MS).batch.quotes) == 1


def test_timestamp_in_seconds_gets_a_hint():
    checked = check_price_batch(f.price_batch(prices=[f.price(timestamp=NOW_MS // 1000)]),
                                NOW_MS)
    assert "seconds instead of milliseconds" in checked.rejected[0].reason


def test_duplicate_symbol_keeps_the_newest_and_reports_the_others():
    prices = [f.price(bid=1.1, ask=1.2, timestamp=NOW_MS - 300),
              f.price(symbol="GBPUSD"),
              f.price(bid=1.3, ask=1.4, timestamp=NOW_MS - 100),
              f.price(bid=1.5, ask=1.6, timestamp=NOW_MS - 200)]
    checked = check_price_batch(f.price_batch(prices=prices), NOW_MS)
    assert checked.batch.quote("EURUSD").bid == 1.3
    assert checked.batch.symbols == ("GBPUSD", "EURUSD")
    assert [v.field for v in checked.rejected] == ["prices[0].symbol", "prices[3].symbol"]
    assert "prices[2]" in checked.rejected[0].reason and "newer" in checked.rejected[0].reason


def test_duplicate_with_equal_time_keeps_the_later_one():
    prices = [f.price(bid=1.1, ask=1.2), f.price(bid=1.3, ask=1.4)]
    checked = check_price_batch(f.price_batch(prices=prices), NOW_MS)
    assert checked.batch.quote("EURUSD").bid == 1.3
    assert [v.field for v in checked.rejected] == ["prices[0].symbol"]


def test_invalid_duplicate_does_not_displace_a_valid_quote():
    prices = [f.price(timestamp=NOW_MS - 300), f.price(bid=NAN, timestamp=NOW_MS - 100)]
    checked = check_price_batch(f.price_batch(prices=prices), NOW_MS)
    assert checked.batch.quote("EURUSD").time_ms == NOW_MS - 300
    assert [v.field for v in checked.rejected] == ["prices[1].bid"]


@pytest.mark.parametrize("overrides, field", [
    ({"user_id": "Alice"}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "alice\n"}, "user_id"),
    ({"batch_timestamp": 0}, "batch_timestamp"),
    ({"batch_timestamp": NOW_MS + 10_000}, "batch_timestamp"),
    ({"account_number": "50-12"}, "account_number"),
    ({"sequence": -1}, "sequence"),
])
def test_envelope_problem_refuses_the_whole_batch(overrides, field):
    err_fields = fields_of(check_price_batch, f.price_batch(**overrides))
    assert err_fields == {field}


def test_too_many_quotes_refuses_the_batch():
    prices = [f.price(symbol=f"SYM{i:03d}") for i in range(4)]
    with pytest.raises(ValidationError) as info:
        check_price_batch(f.price_batch(prices=prices), NOW_MS, Limits(max_quotes_per_batch=3))
    assert info.value.kind == "ClientPriceStream"
    assert [v.field for v in info.value.violations] == ["prices"]
    assert check_price_batch(f.price_batch(prices=prices[:3]), NOW_MS,
                             Limits(max_quotes_per_batch=3)).batch.symbols == (
        "SYM000", "SYM001", "SYM002")


symbols = st.from_regex(SYMBOL_RE, fullmatch=True)
bids = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
quote_times = st.integers(min_value=NOW_MS - 7 * 86_400_000, max_value=NOW_MS + 5_000)


@FAST
@given(symbol=symbols, bid=bids, spread=st.floats(min_value=0, max_value=1e6),
       time_ms=quote_times, digits=st.integers(0, 10))
def test_any_sane_quote_is_accepted_and_round_trips_exactly(symbol, bid, spread, time_ms,
                                                             digits):
    ask = bid + bid * spread / 1e6
    batch = f.price_batch(prices=[f.price(symbol=symbol, bid=bid, ask=ask, timestamp=time_ms,
                                          digits=digits, spread=spread)])
    wire = decode(prices_pb2.ClientPriceStream, batch.SerializeToString())
    checked = check_price_batch(wire, NOW_MS)
    assert checked.rejected == ()
    (quote,) = checked.batch.quotes
    assert (quote.symbol, quote.bid, quote.ask, quote.time_ms, quote.digits,
            quote.spread_points) == (symbol, bid, ask, time_ms, digits, spread)


# (field the violation must name, overrides that break the quote)
CORRUPTIONS = [
    ("bid", {"bid": NAN}), ("bid", {"bid": -1.0}), ("ask", {"ask": INF}),
    ("ask", {"ask": 0.0}), ("ask", {"ask": f.BID / 2}), ("symbol", {"symbol": "eur/usd"}),
    ("timestamp", {"timestamp": NOW_MS + 60_000}), ("digits", {"digits": -1}),
]


@FAST
@given(data=st.data(), names=st.lists(symbols, min_size=1, max_size=12, unique=True))
def test_mixed_batch_keeps_exactly_the_valid_quotes(data, names):
    plan = [data.draw(st.none() | st.sampled_from(CORRUPTIONS)) for _ in names]
    prices = [f.price(**{"symbol": name, **(bad[1] if bad else {})})
              for name, bad in zip(names, plan, strict=True)]
    checked = check_price_batch(f.price_batch(prices=prices), NOW_MS)
    valid = tuple(name for name, bad in zip(names, plan, strict=True) if bad is None)
    assert checked.batch.symbols == valid
    rejected_fields = {v.field for v in checked.rejected}
    expected = {f"prices[{i}].{bad[0]}" for i, bad in enumerate(plan) if bad}
    assert expected <= rejected_fields
    bad_indices = {i for i, bad in enumerate(plan) if bad}
    assert {int(v.field[len("prices["):v.field.index("]")]) for v in checked.rejected} \
        == bad_indices


@FAST
@given(field=st.sampled_from(["bid", "ask"]), bad=st.sampled_from(BAD_PRICES)
       | st.floats(max_value=0.0))
def test_bad_prices_are_always_rejected_naming_the_field(field, bad):
    checked = check_price_batch(f.price_batch(prices=[f.price(**{field: bad})]), NOW_MS)
    assert checked.batch.quotes == ()
    assert f"prices[0].{field}" in {v.field for v in checked.rejected}


# ---------------------------------------------------------------------------- signals


def test_valid_signal_becomes_a_signal():
    sig = check_signal(f.signal(take_profit=0.0), NOW_MS)
    assert (sig.signal_id, sig.symbol, sig.action, sig.order_type) == (
        "sig-20231114-0001", "EURUSD", CommandType.OPEN_POSITION, OrderType.BUY)
    assert (sig.entry, sig.stop_loss, sig.take_profit) == (1.085, 1.08, None)
    assert sig.reference_price == 1.085 and sig.target_signal_id is None
    assert not sig.is_expired(NOW_MS) and sig.is_expired(NOW_MS + 60_000)


@pytest.mark.parametrize("order_type, entry, sl, tp, bad", [
    (commands_pb2.BUY, 1.085, 1.09, 1.095, {"stop_loss"}),
    (commands_pb2.BUY, 1.085, 1.08, 1.08, {"take_profit"}),
    (commands_pb2.BUY, 1.085, 1.085, 1.085, {"stop_loss", "take_profit"}),
    (commands_pb2.SELL, 1.085, 1.08, 1.08, {"stop_loss"}),
    (commands_pb2.SELL, 1.085, 1.09, 1.095, {"take_profit"}),
    (commands_pb2.BUY_LIMIT, 1.080, 1.081, 1.09, {"stop_loss"}),
    (commands_pb2.SELL_STOP, 1.080, 1.079, 1.07, {"stop_loss"}),
])
def test_stops_on_the_wrong_side_are_rejected(order_type, entry, sl, tp, bad):
    msg = f.signal(order_type=order_type, entry=entry, stop_loss=sl, take_profit=tp)
    assert fields_of(check_signal, msg) == bad


def test_stop_reason_says_why():
    assert reason(check_signal, f.signal(stop_loss=1.09), "stop_loss") == \
        "stop_loss 1.09 must be below entry 1.085 for a buy"


@pytest.mark.parametrize("order_type, sl, tp", [
    (commands_pb2.SELL, 1.09, 1.08), (commands_pb2.SELL_LIMIT, 1.09, 0.0),
    (commands_pb2.BUY, 0.0, 0.0), (commands_pb2.BUY_STOP, 1.08, 1.09),
])
def test_stops_on_the_right_side_or_none_are_accepted(order_type, sl, tp):
    check_signal(f.signal(order_type=order_type, stop_loss=sl, take_profit=tp), NOW_MS)


def test_market_signal_without_entry_checks_stops_against_the_reference_price():
    sig = check_signal(f.signal(entry=0.0), NOW_MS)
    assert sig.entry is None
    # A sell trades at the reference bid 1.0849: an SL at 1.0845 is on the wrong side.
    msg = f.signal(entry=0.0, order_type=commands_pb2.SELL, stop_loss=1.0845, take_profit=0)
    assert "reference_bid 1.0849" in reason(check_signal, msg, "stop_loss")


def test_pending_signal_needs_an_entry():
    msg = f.signal(order_type=commands_pb2.BUY_LIMIT, entry=0.0)
    assert fields_of(check_signal, msg) == {"entry"}


@pytest.mark.parametrize("overrides, field", [
    ({"signal_id": ""}, "signal_id"),
    ({"signal_id": "has space"}, "signal_id"),
    ({"signal_id": "x" * 129}, "signal_id"),
    ({"symbol": "EUR-USD"}, "symbol"),
    ({"order_type": 99}, "order_type"),
    ({"action": 7}, "action"),
    ({"reference_bid": NAN}, "reference_bid"),
    ({"reference_ask": 1.0}, "reference_ask"),
    ({"entry": -1.0}, "entry"),
    ({"stop_loss": INF}, "stop_loss"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": -0.1}, "confidence"),
    ({"close_fraction": 2.0}, "close_fraction"),
    ({"created_at": 0}, "created_at"),
    ({"expires_at": NOW_MS - 1_000}, "expires_at"),
    ({"expires_at": 0}, "expires_at"),
    ({"strategy": "s" * 1025}, "strategy"),
])
def test_signal_rule(overrides, field):
    assert fields_of(check_signal, f.signal(**overrides)) == {field}


def test_huge_bad_value_is_not_echoed_in_full():
    text = reason(check_signal, f.signal(signal_id="x" * 100_000), "signal_id")
    assert "100000 characters" in text and len(text) < 200


def test_unknown_enum_reason_lists_the_known_values():
    text = reason(check_signal, f.signal(order_type=99), "order_type")
    assert "99" in text and "BUY_LIMIT" in text


def test_signal_reports_all_violations_at_once():
    msg = f.signal(signal_id="", symbol="eur", confidence=NAN, expires_at=1, stop_loss=2.0)
    err_fields = fields_of(check_signal, msg)
    assert err_fields == {"signal_id", "symbol", "confidence", "expires_at", "stop_loss"}


def test_close_signal_needs_the_signal_it_closes():
    msg = f.signal(action=commands_pb2.CLOSE_POSITION, close_fraction=0.5)
    assert fields_of(check_signal, msg) == {"target_signal_id"}
    sig = check_signal(f.signal(action=commands_pb2.CLOSE_POSITION, close_fraction=0.5,
                                target_signal_id="sig-1"), NOW_MS)
    assert (sig.action, sig.target_signal_id, sig.close_fraction) == (
        CommandType.CLOSE_POSITION, "sig-1", 0.5)


def test_modify_signal_may_trail_the_stop_past_the_entry():
    # The position was opened at 1.0800; the market is at 1.0849 now.
    ok = f.signal(action=commands_pb2.MODIFY_POSITION, target_signal_id="sig-1",
                  entry=1.0800, stop_loss=1.0820, take_profit=1.0950)
    assert check_signal(ok, NOW_MS).stop_loss == 1.0820
    bad = f.signal(action=commands_pb2.MODIFY_POSITION, target_signal_id="sig-1",
                   stop_loss=1.0860)
    assert "reference_bid" in reason(check_signal, bad, "stop_loss")


prices_ = st.floats(min_value=0.5, max_value=2.0, allow_nan=False)


@FAST
@given(entry=prices_, sl=prices_, tp=prices_, buy=st.booleans())
def test_pending_signal_accepted_exactly_when_stops_bracket_the_entry(entry, sl, tp, buy):
    order_type = commands_pb2.BUY_LIMIT if buy else commands_pb2.SELL_LIMIT
    msg = f.signal(order_type=order_type, entry=entry, stop_loss=sl, take_profit=tp)
    bracketed = sl < entry < tp if buy else sl > entry > tp
    try:
        check_signal(msg, NOW_MS)
        accepted = True
    except ValidationError as err:
        assert {v.field for v in err.violations} <= {"stop_loss", "take_profit"}
        accepted = False
    assert accepted == bracketed


# --------------------------------------------------------------------------- commands


def test_valid_open_command():
    cmd = check_command(f.command(), NOW_MS)
    assert (cmd.type, cmd.order_type, cmd.symbol, cmd.lot_size) == (
        CommandType.OPEN_POSITION, OrderType.BUY, "EURUSD", 0.10)
    assert (cmd.entry_price, cmd.stop_loss, cmd.take_profit) == (f.ASK, 1.08012, 1.09512)
    assert cmd.position_ticket is None and cmd.quote_time_ms == NOW_MS - 700


@pytest.mark.parametrize("overrides, field", [
    ({"lot_size": 0.0}, "lot_size"),
    ({"lot_size": -0.1}, "lot_size"),
    ({"lot_size": NAN}, "lot_size"),
    ({"lot_size": 1000.5}, "lot_size"),
    ({"symbol": ""}, "symbol"),
    ({"entry_price": 0.0}, "entry_price"),
    ({"user_id": "bob_smith"}, "user_id"),
    ({"command_id": ""}, "command_id"),
    ({"type": 4}, "type"),
    ({"order_type": -1}, "order_type"),
    ({"stop_loss": 1.0900}, "stop_loss"),
    ({"confidence_score": 1.01}, "confidence_score"),
    ({"expires_at": NOW_MS - 500}, "expires_at"),
    ({"created_at": NOW_MS + 60_000, "expires_at": NOW_MS + 90_000}, "created_at"),
    ({"quote_ask": 1.0}, "quote_ask"),
    ({"quote_time": -5}, "quote_time"),
    ({"max_deviation_points": -1}, "max_deviation_points"),
    ({"price_adjustment": NAN}, "price_adjustment"),
    ({"original_entry": -1.0}, "original_entry"),
])
def test_command_rule(overrides, field):
    assert fields_of(check_command, f.command(**overrides)) == {field}


def test_max_lot_is_a_limit():
    check_command(f.command(lot_size=1000.5), NOW_MS, Limits(max_lot=5000.0))


@pytest.mark.parametrize("kind", [commands_pb2.CLOSE_POSITION, commands_pb2.MODIFY_POSITION])
def test_close_and_modify_need_a_target(kind):
    msg = f.command(type=kind, lot_size=0.0, stop_loss=0.0, take_profit=0.0)
    assert "needs a target" in reason(check_command, msg, "position_ticket")
    by_ticket = check_command(f.command(type=kind, lot_size=0.0, position_ticket=880001,
                                        stop_loss=0.0, take_profit=0.0), NOW_MS)
    assert by_ticket.position_ticket == 880001
    by_id = check_command(f.command(type=kind, target_command_id="sig-1:alice",
                                    stop_loss=0.0, take_profit=0.0), NOW_MS)
    assert by_id.target_command_id == "sig-1:alice"


def test_close_of_the_whole_position_has_lot_size_zero():
    cmd = check_command(f.command(type=commands_pb2.CLOSE_POSITION, lot_size=0.0,
                                  entry_price=0.0, position_ticket=1), NOW_MS)
    assert cmd.lot_size == 0.0 and cmd.entry_price is None


def test_close_all_may_leave_the_symbol_empty():
    cmd = check_command(f.command(type=commands_pb2.CLOSE_ALL, symbol="", lot_size=0.0,
                                  entry_price=0.0, stop_loss=0.0, take_profit=0.0), NOW_MS)
    assert cmd.type is CommandType.CLOSE_ALL and cmd.symbol is None
    bad = f.command(type=commands_pb2.CLOSE_ALL, symbol="eurusd")
    assert "symbol" in fields_of(check_command, bad)


def test_modify_checks_stops_against_the_current_quote_not_the_entry():
    base = dict(type=commands_pb2.MODIFY_POSITION, position_ticket=1, entry_price=1.0800)
    # A buy position in profit: SL trailed above the entry but below the bid is fine.
    assert check_command(f.command(**base, stop_loss=1.0820), NOW_MS).stop_loss == 1.0820
    text = reason(check_command, f.command(**base, stop_loss=1.0851), "stop_loss")
    assert text == "stop_loss 1.0851 must be below quote_bid 1.085 for a buy"


# ------------------------------------------------------------------------- executions


def test_valid_execution():
    ex = check_execution(f.execution(), NOW_MS)
    assert (ex.status, ex.fill_price, ex.filled_volume, ex.position_ticket) == (
        ExecutionStatus.FILLED, 1.08514, 0.10, 880001)
    assert ex.agent_latency_ms == 100 and ex.status.is_fill


@pytest.mark.parametrize("overrides, field", [
    ({"status": 0}, "status"),
    ({"status": 42}, "status"),
    ({"fill_price": 0.0}, "fill_price"),
    ({"filled_volume": 0.0}, "filled_volume"),
    ({"fill_price": NAN}, "fill_price"),
    ({"slippage_points": INF}, "slippage_points"),
    ({"executed_at": NOW_MS - 500}, "executed_at"),
    ({"received_at": 0}, "received_at"),
    ({"command_id": "a\tb"}, "command_id"),
    ({"symbol": "gold"}, "symbol"),
    ({"retcode": -1}, "retcode"),
    ({"command_type": 9}, "command_type"),
])
def test_execution_rule(overrides, field):
    assert fields_of(check_execution, f.execution(**overrides)) == {field}


def test_partial_fill_needs_price_and_volume():
    msg = f.execution(status=execution_pb2.EXECUTION_STATUS_PARTIAL, fill_price=0.0,
                      filled_volume=0.0)
    assert fields_of(check_execution, msg) == {"fill_price", "filled_volume"}


def test_placed_pending_order_and_modify_have_no_fill():
    for overrides in ({"order_type": commands_pb2.BUY_LIMIT},
                      {"command_type": commands_pb2.MODIFY_POSITION}):
        ex = check_execution(f.execution(fill_price=0.0, filled_volume=0.0, **overrides),
                             NOW_MS)
        assert ex.fill_price is None and ex.filled_volume == 0.0


@pytest.mark.parametrize("status", [execution_pb2.EXECUTION_STATUS_REJECTED,
                                    execution_pb2.EXECUTION_STATUS_FAILED])
def test_refusal_must_say_why(status):
    bare = f.execution(status=status, reason="", reject_code="", fill_price=0.0,
                       filled_volume=0.0)
    assert "must say why" in reason(check_execution, bare, "reason")
    coded = f.execution(status=status, reason="", reject_code="max_spread", fill_price=0.0,
                        filled_volume=0.0)
    assert check_execution(coded, NOW_MS).reject_code == "max_spread"


def test_expired_and_duplicate_reports_need_no_fill_or_reason():
    for status in (execution_pb2.EXECUTION_STATUS_EXPIRED,
                   execution_pb2.EXECUTION_STATUS_DUPLICATE):
        ex = check_execution(f.execution(status=status, fill_price=0.0, filled_volume=0.0,
                                         reason=""), NOW_MS)
        assert not ex.status.is_fill


# ---------------------------------------------------------------------------- account


def test_valid_account_snapshot():
    snap = check_account(f.account(), NOW_MS)
    assert (snap.currency, snap.balance, snap.equity, snap.margin_used) == (
        "USD", 10_000.0, 10_025.5, 108.5)
    assert snap.drawdown == pytest.approx((10_100.0 - 10_025.5) / 10_100.0)


@pytest.mark.parametrize("overrides, field", [
    ({"base_currency": "usd"}, "base_currency"),
    ({"base_currency": "EURO"}, "base_currency"),
    ({"base_currency": ""}, "base_currency"),
    ({"balance": NAN}, "balance"),
    ({"equity": INF}, "equity"),
    ({"equity": 1e14}, "equity"),
    ({"margin_used": -1.0}, "margin_used"),
    ({"margin_level": -5.0}, "margin_level"),
    ({"account_number": "abc"}, "account_number"),
    ({"account_number": ""}, "account_number"),
    ({"account_type": 9}, "account_type"),
    ({"open_positions": -1}, "open_positions"),
    ({"leverage": -100}, "leverage"),
    ({"timestamp": 0}, "timestamp"),
])
def test_account_rule(overrides, field):
    assert fields_of(check_account, f.account(**overrides)) == {field}


def test_margin_call_figures_are_accepted():
    # Equity below margin: free margin and floating P/L are negative, and that is news.
    snap = check_account(f.account(equity=50.0, margin_free=-58.5, profit=-9_950.0), NOW_MS)
    assert snap.margin_free == -58.5


# ----------------------------------------------------------------------- symbol specs


def test_valid_symbol_specs():
    specs = check_symbol_specs(f.symbol_spec_list(), NOW_MS)
    assert specs.rejected == ()
    assert [s.symbol for s in specs.specs] == ["EURUSD", "XAUUSD"]
    assert specs.spec("XAUUSD").broker_symbol == "GOLD" and specs.spec("USDJPY") is None


@pytest.mark.parametrize("overrides, field", [
    ({"digits": 11}, "digits"),
    ({"digits": -1}, "digits"),
    ({"point": 0.0001}, "point"),
    ({"point": 0.0}, "point"),
    ({"volume_min": 200.0}, "volume_max"),
    ({"volume_step": 0.0}, "volume_step"),
    ({"contract_size": 0.0}, "contract_size"),
    ({"tick_value": NAN}, "tick_value"),
    ({"stops_level": -1}, "stops_level"),
    ({"trade_mode": 5}, "trade_mode"),
    ({"broker_symbol": ""}, "broker_symbol"),
    ({"currency_profit": "us dollar"}, "currency_profit"),
    ({"symbol": "EURUSD.m"}, "symbol"),
])
def test_bad_spec_is_dropped_and_the_others_kept(overrides, field):
    specs = check_symbol_specs(f.symbol_spec_list(
        specs=[f.symbol_spec(**overrides), f.symbol_spec(symbol="GBPUSD")]), NOW_MS)
    assert [s.symbol for s in specs.specs] == ["GBPUSD"]
    assert {v.field for v in specs.rejected} == {f"specs[0].{field}"}


def test_point_mismatch_reason_names_digits():
    specs = check_symbol_specs(f.symbol_spec_list(specs=[f.symbol_spec(point=0.0001)]), NOW_MS)
    assert "does not match digits 5" in specs.rejected[0].reason


def test_duplicate_spec_keeps_the_later_one():
    specs = check_symbol_specs(f.symbol_spec_list(
        specs=[f.symbol_spec(volume_max=50.0), f.symbol_spec(volume_max=80.0)]), NOW_MS)
    assert [s.volume_max for s in specs.specs] == [80.0]
    assert [v.field for v in specs.rejected] == ["specs[0].symbol"]


def test_spec_list_envelope_problems_refuse_the_list():
    assert fields_of(check_symbol_specs, f.symbol_spec_list(user_id="-x")) == {"user_id"}
    too_many = f.symbol_spec_list(specs=[f.symbol_spec()] * 3)
    assert fields_of(check_symbol_specs, too_many, limits=Limits(max_specs_per_list=2)) == {
        "specs"}


# -------------------------------------------------------------------------- heartbeat


def test_valid_heartbeat():
    hb = check_heartbeat(f.heartbeat(), NOW_MS)
    assert (hb.user_id, hb.outbox_depth, hb.last_publish_latency_ms, hb.terminal_connected) \
        == ("alice", 0, 3.5, True)


@pytest.mark.parametrize("overrides, field", [
    ({"outbox_depth": -1}, "outbox_depth"),
    ({"last_publish_latency_ms": -0.5}, "last_publish_latency_ms"),
    ({"last_command_latency_ms": NAN}, "last_command_latency_ms"),
    ({"p99_command_latency_ms": -1.0}, "p99_command_latency_ms"),
    ({"price_staleness_ms": INF}, "price_staleness_ms"),
    ({"reconnects": -3}, "reconnects"),
    ({"session_id": ""}, "session_id"),
    ({"agent_version": " "}, "agent_version"),
    ({"timestamp": NOW_MS + 6_000}, "timestamp"),
])
def test_heartbeat_rule(overrides, field):
    assert fields_of(check_heartbeat, f.heartbeat(**overrides)) == {field}


# ------------------------------------------------------------------------ market data


def test_valid_market_data():
    md = check_market_data(f.market_data(), NOW_MS)
    assert (md.symbol, md.bid, md.ask, md.indicators.rsi) == ("EURUSD", 1.0849, 1.085, 58.0)
    assert md.session.active_sessions == ("london",) and md.session.next_open_ms is None
    assert md.correlations[0].coefficient == 0.87


@pytest.mark.parametrize("overrides, field", [
    ({"ask": 1.0}, "ask"),
    ({"bid": NAN}, "bid"),
    ({"symbol": ""}, "symbol"),
    ({"user_tier": 8}, "user_tier"),
    ({"indicators": f.indicators(rsi=120.0)}, "indicators.rsi"),
    ({"indicators": f.indicators(sma_20=-1.0)}, "indicators.sma_20"),
    ({"indicators": f.indicators(bollinger_lower=1.09)}, "indicators.bollinger_middle"),
    ({"correlations": [market_data_pb2.SymbolCorrelation(
        symbol_a="EURUSD", symbol_b="gbpusd", coefficient=1.5)]},
     "correlations[0].coefficient"),
])
def test_market_data_rule(overrides, field):
    assert field in fields_of(check_market_data, f.market_data(**overrides))


def test_indicators_not_yet_computed_are_zero_and_accepted():
    md = check_market_data(f.market_data(indicators=market_data_pb2.TechnicalIndicators()),
                           NOW_MS)
    assert md.indicators.sma_50 == 0.0


# ------------------------------------------------- fuzz: nothing but ValidationError

CHECKS = [
    (f.signal, check_signal), (f.command, check_command), (f.execution, check_execution),
    (f.account, check_account), (f.symbol_spec_list, check_symbol_specs),
    (f.heartbeat, check_heartbeat), (f.market_data, check_market_data),
    (f.price_batch, check_price_batch),
]
_INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
}


def _values(field: FieldDescriptor) -> st.SearchStrategy:
    """Hostile values of a field's wire type, near-valid ones included."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats() | st.sampled_from([0.0, 1.085, -1.0])
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 8)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=20) | st.sampled_from(["", "EURUSD", "alice", "USD", "1"])
    low, high = _INT_RANGES[kind]
    near_now = st.integers(max(low, NOW_MS - 10**9), min(high, NOW_MS + 10**5))
    small = st.integers(max(low, -1), 10)
    return st.integers(low, high) | (near_now if high > NOW_MS else small)


def _mutate(draw, msg, depth: int = 0) -> None:
    for field in msg.DESCRIPTOR.fields:
        if draw(st.integers(0, 3)):  # leave three fields in four alone
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None:
            for sub in (value if field.is_repeated else [value]):
                if depth == 0:
                    _mutate(draw, sub, depth + 1)
        elif field.is_repeated:
            value[:] = draw(st.lists(_values(field), max_size=3))
        else:
            setattr(msg, field.name, draw(_values(field)))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(CHECKS))
def test_mutated_messages_yield_a_value_or_a_validation_error(data, case):
    build, check = case
    msg = build()
    _mutate(data.draw, msg)
    wire = decode(type(msg), msg.SerializeToString())
    try:
        result = check(wire, NOW_MS)
    except ValidationError as err:
        reported = err.violations
        assert err.kind == msg.DESCRIPTOR.name and reported
    else:
        reported = getattr(result, "rejected", ())
    for v in reported:
        assert v.reason and str(v) == f"{v.field}: {v.reason}"
        root = v.field.split(".")[0].split("[")[0]
        assert root in msg.DESCRIPTOR.fields_by_name, v  # every path names a real field
