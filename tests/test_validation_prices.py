"""The price batch's fast path (issue 15) is the full check, only faster.

``check_price_batch`` accepts a batch in one pass of plain comparisons when every rule
holds; anything else goes through the full rules. These tests hold the two to the same
answer on batches built to sit on every rule's edge: the fast path accepts exactly the
batches the full check finds clean, and returns the same batch for them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt5fleet.proto.subjects import check_symbol
from mt5fleet.proto.v1 import prices_pb2
from mt5fleet.proto.validation import Limits, ValidationError, check_price_batch
from mt5fleet.proto.validation_prices import KnownNames, _checked, _well_formed

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from factories import NOW_MS  # noqa: E402

LIMITS = Limits(max_quotes_per_batch=4, max_text_len=8, max_price=1000.0,
                max_future_skew_ms=5_000, max_past_age_ms=60_000)
EDGES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every rule's edge: just inside, on it, just outside.
prices_ = st.sampled_from([1.1, 1.1001, 1000.0, 1000.0000001, 0.0, -0.0, -1.0, 5e-324,
                           math.nan, math.inf, -math.inf])
times = st.sampled_from([NOW_MS, NOW_MS + 5_000, NOW_MS + 5_001, NOW_MS - 60_000,
                         NOW_MS - 60_001, 0, -1, NOW_MS // 1000])
texts = st.sampled_from(["", "ICM", "8chars!!", "9 chars!!"])
symbols = st.sampled_from(["EURUSD", "GBPUSD", "XAUUSD", "eurusd", "EU", "EURUSD\n", "EUR USD",
                           "A" * 16, "A" * 17, "US30"])
user_ids = st.sampled_from(["alice", "u00042", "Alice", "-bob", "a" * 63, "a" * 64, "bob\n", ""])
accounts = st.sampled_from(["", "12345678", "1" * 20, "1" * 21, "12a", "123\n"])


GOOD_QUOTE = dict(symbol="EURUSD", bid=1.1, ask=1.1001, spread=10.0, timestamp=NOW_MS, digits=5,
                  broker_symbol="EURUSD.a", broker_server="ICM")
QUOTE_EDGES = dict(symbol=symbols, bid=prices_, ask=prices_,
                   spread=st.sampled_from([0.0, 10.0, -0.5, math.inf, math.nan]), timestamp=times,
                   digits=st.sampled_from([0, 10, 11, -1]), broker_symbol=texts, broker_server=texts)
BATCH_EDGES = dict(user_id=user_ids, broker_name=texts, account_number=accounts,
                   batch_timestamp=times, sequence=st.sampled_from([0, 7, -1]))


@st.composite
def batches(draw) -> prices_pb2.ClientPriceStream:
    """A clean batch with a few fields moved to an edge, so that most draws are clean but
    for one rule: a fast path that got any single rule wrong disagrees on some draw."""
    quotes = []
    for symbol in draw(st.lists(st.sampled_from(["EURUSD", "GBPUSD", "XAUUSD", "US30"]), max_size=5)):
        fields = {**GOOD_QUOTE, "symbol": symbol}
        for name in draw(st.lists(st.sampled_from(sorted(QUOTE_EDGES)), max_size=2)):
            fields[name] = draw(QUOTE_EDGES[name])
        quotes.append(prices_pb2.ClientPrice(**fields))
    fields = dict(user_id="alice", broker_name="ICM", account_number="123", batch_timestamp=NOW_MS,
                  sequence=1)
    for name in draw(st.lists(st.sampled_from(sorted(BATCH_EDGES)), max_size=1)):
        fields[name] = draw(BATCH_EDGES[name])
    return prices_pb2.ClientPriceStream(prices=quotes, **fields)


def full(msg):
    try:
        return _checked(msg, NOW_MS, LIMITS)
    except ValidationError:
        return None


@EDGES
@given(batches())
def test_the_fast_path_accepts_exactly_the_clean_batches_and_returns_the_same(msg):
    fast, slow = _well_formed(msg, NOW_MS, LIMITS), full(msg)
    clean = slow is not None and not slow.rejected
    assert (fast is not None) == clean
    if fast is not None:
        assert fast == slow.batch
    if slow is not None:   # and the public check answers as the full rules do
        assert check_price_batch(msg, NOW_MS, LIMITS) == slow


def one_field_moved() -> list[tuple[str, str, object]]:
    """Every field of the batch and of its second quote, at every edge value."""
    cases = []
    for where, edges in (("quote", QUOTE_EDGES), ("batch", BATCH_EDGES)):
        for name, strategy in sorted(edges.items()):
            cases.extend((where, name, value) for value in strategy.elements)
    return cases


@pytest.mark.parametrize(("where", "name", "value"), one_field_moved())
def test_each_rule_edge_alone_gets_the_same_answer_both_ways(where, name, value):
    quotes = [prices_pb2.ClientPrice(**{**GOOD_QUOTE, "symbol": s}) for s in ("GBPUSD", "EURUSD")]
    msg = prices_pb2.ClientPriceStream(user_id="alice", broker_name="ICM", account_number="123",
                                       batch_timestamp=NOW_MS, sequence=1, prices=quotes)
    setattr(msg.prices[1] if where == "quote" else msg, name, value)
    fast, slow = _well_formed(msg, NOW_MS, LIMITS), full(msg)
    assert (fast is not None) == (slow is not None and not slow.rejected)
    if fast is not None:
        assert fast == slow.batch


def test_a_typical_batch_takes_the_fast_path():
    msg = prices_pb2.ClientPriceStream(
        user_id="alice", broker_name="IC Markets", account_number="123456",
        batch_timestamp=NOW_MS, sequence=3, prices=[
            prices_pb2.ClientPrice(symbol=s, bid=1.1, ask=1.1002, spread=2, timestamp=NOW_MS,
                                   digits=5, broker_symbol=s + ".a", broker_server="ICM-Demo")
            for s in ("EURUSD", "GBPUSD", "USDJPY")])
    batch = _well_formed(msg, NOW_MS, Limits())
    assert batch is not None and batch.symbols == ("EURUSD", "GBPUSD", "USDJPY")


def test_known_names_never_remember_a_bad_name_and_stay_bounded():
    names = KnownNames(check_symbol, limit=3)
    assert not names.ok("eurusd") and not names.ok("eurusd")
    for symbol in ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "NZDUSD"):
        assert names.ok(symbol)
    assert len(names._good) <= 3
    assert "eurusd" not in names._good
