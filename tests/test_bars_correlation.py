"""Bars from ticks (mt5fleet.workers.core.bars) and rolling correlations (mt5fleet.workers.core.correlation)."""

from __future__ import annotations

import math
import random

import pytest

from mt5fleet.proto.domain.correlations import STATIC_CORRELATIONS, select_pairs
from mt5fleet.proto.validation import ValidationError, check_correlation_snapshot
from mt5fleet.workers.adapters.wire import bar_message, correlation_snapshot_message
from mt5fleet.workers.core.bars import Bar, BarBuilder
from mt5fleet.workers.core.correlation import RollingCorrelation

MINUTE = 60_000
T0 = 1_718_193_600_000  # Wed 2024-06-12 12:00:00 UTC, a minute boundary, FX market open
POINTS = {"EURUSD": 0.00001, "USDJPY": 0.001}


def builder() -> BarBuilder:
    return BarBuilder(60, point=POINTS)


# ------------------------------------------------------------------ bars


def test_a_tick_in_the_next_minute_closes_the_bar_with_ohlc_volume_and_spread():
    bars = builder()
    ticks = [(1.08500, 1.08502, 0), (1.08510, 1.08513, 15_000), (1.08490, 1.08494, 30_000),
             (1.08505, 1.08506, MINUTE - 1)]
    for bid, ask, dt in ticks:
        assert bars.on_tick("EURUSD", bid, ask, T0 + dt) == []
    closed = bars.on_tick("EURUSD", 1.08520, 1.08522, T0 + MINUTE)
    assert closed == [Bar(symbol="EURUSD", timeframe_s=60, open_time_ms=T0, open=1.08500, high=1.08510,
                          low=1.08490, close=1.08505, tick_volume=4, spread=(2 + 3 + 4 + 1) / 4)]
    assert closed[0].close_time_ms == T0 + MINUTE
    assert bars.open_bar("EURUSD").open_time_ms == T0 + MINUTE


def test_a_gap_closes_one_bar_and_makes_no_empty_ones():
    bars = builder()
    bars.on_tick("EURUSD", 1.085, 1.08502, T0 + 10_000)
    closed = bars.on_tick("EURUSD", 1.086, 1.08602, T0 + 5 * MINUTE + 1)
    assert [b.open_time_ms for b in closed] == [T0]
    assert bars.open_bar("EURUSD").open_time_ms == T0 + 5 * MINUTE
    assert bars.open_bar("EURUSD").open == 1.086


def test_ticks_older_than_the_current_bar_are_dropped_and_counted():
    bars = builder()
    bars.on_tick("EURUSD", 1.085, 1.08502, T0 + 5_000)
    bars.on_tick("EURUSD", 1.086, 1.08602, T0 + MINUTE + 5_000)
    assert bars.on_tick("EURUSD", 1.2, 1.20002, T0 + 59_000) == []   # the closed minute
    assert bars.on_tick("EURUSD", 1.2, 1.20002, T0 - MINUTE) == []   # even older
    assert bars.late_ticks == 2
    current = bars.open_bar("EURUSD")
    assert (current.high, current.tick_volume) == (1.086, 1)


def test_duplicate_and_out_of_order_times_inside_the_bar():
    bars = builder()
    bars.on_tick("EURUSD", 1.08500, 1.08502, T0 + 10_000)
    bars.on_tick("EURUSD", 1.08510, 1.08512, T0 + 20_000)
    bars.on_tick("EURUSD", 1.08520, 1.08522, T0 + 20_000)   # same ms: the later arrival is newer
    bars.on_tick("EURUSD", 1.08400, 1.08402, T0 + 15_000)   # out of order: counts, does not close
    bars.on_tick("EURUSD", 1.08450, 1.08452, T0 + 1_000)    # older than the first: becomes the open
    bar = bars.flush(T0 + MINUTE)[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.tick_volume) == (1.0845, 1.0852, 1.084, 1.0852, 5)
    assert bars.out_of_order_ticks == 2 and bars.late_ticks == 0


def test_flush_closes_bars_whose_minute_has_passed_and_later_ticks_there_are_late():
    bars = builder()
    bars.on_tick("EURUSD", 1.085, 1.08502, T0 + 1_000)
    bars.on_tick("USDJPY", 151.200, 151.203, T0 + MINUTE + 1_000)
    assert bars.flush(T0 + MINUTE - 1) == []
    closed = bars.flush(T0 + MINUTE)
    assert [(b.symbol, b.open_time_ms, b.spread) for b in closed] == [("EURUSD", T0, 2.0)]
    assert bars.flush(T0 + MINUTE) == []
    assert bars.on_tick("EURUSD", 1.09, 1.09002, T0 + 59_999) == [] and bars.late_ticks == 1
    assert bars.on_tick("EURUSD", 1.09, 1.09002, T0 + MINUTE) == []   # the next minute opens normally
    assert [b.symbol for b in bars.flush(T0 + 2 * MINUTE)] == ["EURUSD", "USDJPY"]


def test_symbols_are_independent_and_spread_uses_each_point():
    bars = builder()
    bars.on_tick("EURUSD", 1.08500, 1.08503, T0)
    bars.on_tick("USDJPY", 151.200, 151.205, T0)
    closed = bars.on_tick("USDJPY", 151.300, 151.304, T0 + MINUTE)
    assert [(b.symbol, b.spread) for b in closed] == [("USDJPY", 5.0)]
    assert bars.open_bar("EURUSD").spread == 3.0


@pytest.mark.parametrize("symbol,bid,ask", [
    ("EURUSD", float("nan"), 1.1), ("EURUSD", 1.1, 1.09), ("EURUSD", 0.0, 0.0001), ("GBPUSD", 1.27, 1.2701),
])
def test_invalid_ticks_are_counted_not_built(symbol, bid, ask):
    bars = builder()
    assert bars.on_tick(symbol, bid, ask, T0) == []
    assert bars.invalid_ticks == 1 and bars.open_bar(symbol) is None


def test_bar_message_and_point_function():
    bars = BarBuilder(60, point=lambda symbol: 0.01)
    bars.on_tick("XAUUSD", 2350.10, 2350.22, T0)
    message = bar_message(bars.flush(T0 + MINUTE)[0])
    assert (message.symbol, message.timeframe, message.open_time, message.close) == ("XAUUSD", 60, T0, 2350.10)
    assert (message.tick_volume, message.spread) == (1, 12.0)
    with pytest.raises(ValueError):
        BarBuilder(0, point=POINTS)


def test_default_points_are_the_canonical_symbols():
    bars = BarBuilder()
    bars.on_tick("USDJPY", 151.200, 151.203, T0)
    bars.on_tick("XAUUSD", 2350.10, 2350.22, T0)
    assert [(b.symbol, b.spread) for b in bars.flush(T0 + MINUTE)] == [("USDJPY", 3.0), ("XAUUSD", 12.0)]
    assert bars.on_tick("DOGUSD", 0.1, 0.2, T0 + MINUTE) == [] and bars.invalid_ticks == 1


# ------------------------------------------------------------------ correlation


def correlated_closes(rounds: int, seed: int = 1) -> list[dict[str, float]]:
    """Four symbols driven by shared factors, so their returns correlate (some negatively)."""
    rng = random.Random(seed)
    prices = {"EURUSD": 1.085, "GBPUSD": 1.27, "USDCHF": 0.88, "USDJPY": 151.0}
    out = []
    for _ in range(rounds):
        usd, eur, other = (rng.gauss(0, 3e-4) for _ in range(3))
        moves = {"EURUSD": eur - usd, "GBPUSD": 0.8 * eur - usd + other, "USDCHF": usd - 0.9 * eur,
                 "USDJPY": usd + 2 * other}
        prices = {s: p * math.exp(moves[s]) for s, p in prices.items()}
        out.append(dict(prices))
    return out


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    cov = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return cov / math.sqrt(math.fsum((x - mx) ** 2 for x in xs) * math.fsum((y - my) ** 2 for y in ys))


def reference_matrix(history: list[dict[str, float]], window: int) -> dict[tuple[str, str], float]:
    """Plain Pearson over the last ``window`` log returns of closes carried forward."""
    series: dict[str, list[float]] = {}
    for symbol in sorted({s for round_ in history for s in round_}):
        closes, last = [], None
        for round_ in history:
            last = round_.get(symbol, last)
            closes.append(last)
        series[symbol] = [math.log(b / a) for a, b in zip(closes, closes[1:], strict=False) if a is not None]
    out = {}
    for a in series:
        for b in series:
            if a < b and min(len(series[a]), len(series[b])) >= window:
                out[(a, b)] = pearson(series[a][-window:], series[b][-window:])
    return out


def assert_matrix_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for pair, rho in want.items():
        assert abs(got[pair] - rho) <= 1e-9, pair


def test_rolling_correlation_matches_plain_pearson_every_round():
    history = correlated_closes(400)
    corr = RollingCorrelation(window=60)
    for index, closes in enumerate(history):
        corr.update(closes, T0 + index * MINUTE)
        assert_matrix_close(corr.matrix(), reference_matrix(history[: index + 1], 60))
    assert corr.matrix()[("EURUSD", "USDCHF")] < -0.5 < 0.5 < corr.matrix()[("EURUSD", "GBPUSD")]


def test_missing_symbols_carry_forward_and_late_joiners_wait_for_a_full_window():
    rng = random.Random(4)
    history = []
    for index, closes in enumerate(correlated_closes(300, seed=2)):
        if index < 100:
            closes.pop("USDJPY")                 # joins at round 100
        if rng.random() < 0.2:
            closes.pop("GBPUSD", None)           # no bar this minute
        history.append(closes)
    corr = RollingCorrelation(window=50)
    for index, closes in enumerate(history):
        corr.update(closes)
        assert_matrix_close(corr.matrix(), reference_matrix(history[: index + 1], 50))
    assert ("USDJPY", "USDCHF") not in corr.matrix() and ("USDCHF", "USDJPY") in corr.matrix()


def test_no_drift_after_a_long_run():
    history = correlated_closes(20_000, seed=9)
    corr = RollingCorrelation(window=30)
    for closes in history:
        corr.update(closes)
    assert_matrix_close(corr.matrix(), reference_matrix(history[-40:], 30))


def test_flat_symbols_have_no_correlation_and_stale_rounds_are_skipped():
    corr = RollingCorrelation(window=5)
    for index, closes in enumerate(correlated_closes(10)):
        corr.update({**closes, "XAUUSD": 2350.0}, T0 + index * MINUTE)
    corr.update({"EURUSD": 9.9}, T0)              # not newer than the last round
    assert corr.skipped_rounds == 1
    assert all("XAUUSD" not in pair for pair in corr.matrix()) and len(corr.matrix()) == 6
    corr.update({"EURUSD": float("nan")}, T0 + 99 * MINUTE)
    assert corr.invalid_closes == 1


def test_snapshot_lists_each_pair_once_with_window_and_time():
    corr = RollingCorrelation(window=20)
    for closes in correlated_closes(40):
        corr.update(closes)
    snapshot = correlation_snapshot_message(corr.snapshot(T0), T0)
    pairs = [(p.symbol_a, p.symbol_b) for p in snapshot.pairs]
    assert pairs == sorted(corr.matrix()) and len(pairs) == 6
    assert snapshot.computed_at == T0 and {(p.window, p.computed_at) for p in snapshot.pairs} == {(20, T0)}
    assert check_correlation_snapshot(snapshot, T0) == pytest.approx(corr.matrix())
    for_eur = corr.correlations_for("EURUSD", T0)
    assert len(for_eur) == 3 and all("EURUSD" in (p.symbol_a, p.symbol_b) for p in for_eur)
    assert [abs(p.coefficient) for p in for_eur] == sorted((abs(p.coefficient) for p in for_eur), reverse=True)


def test_a_snapshot_with_a_bad_pair_is_refused_whole_naming_the_pair():
    corr = RollingCorrelation(window=20)
    for closes in correlated_closes(40):
        corr.update(closes)
    snapshot = correlation_snapshot_message(corr.snapshot(T0), T0)
    snapshot.pairs[1].coefficient = 1.5
    with pytest.raises(ValidationError, match=r"pairs\[1\]\.coefficient"):
        check_correlation_snapshot(snapshot, T0)


# ------------------------------------------------------------------ select_pairs

MEASURED = {("EURUSD", "USDCHF"): -0.95, ("EURGBP", "EURUSD"): 0.72, ("EURUSD", "GBPUSD"): 0.65,
            ("GBPUSD", "GBPJPY"): 0.85, ("EURUSD", "XAUUSD"): 0.1}


def test_select_pairs_strongest_first_above_threshold():
    assert select_pairs(["EURUSD"], MEASURED) == ["USDCHF", "EURGBP"]
    assert select_pairs(["EURUSD"], MEASURED, threshold=0.6) == ["USDCHF", "EURGBP", "GBPUSD"]
    assert select_pairs(["EURUSD"], MEASURED, limit=1) == ["USDCHF"]
    assert select_pairs(["EURUSD", "GBPUSD"], MEASURED) == ["USDCHF", "GBPJPY", "EURGBP"]


def test_select_pairs_never_returns_primaries_and_measured_weak_means_none():
    assert select_pairs(["EURUSD", "USDCHF"], MEASURED) == ["EURGBP"]
    assert select_pairs(["XAUUSD"], MEASURED) == []      # measured, nothing strong: no fallback


def test_select_pairs_falls_back_to_the_static_matrix_before_data():
    assert select_pairs(["EURUSD"], {}) == ["USDCHF", "EURGBP", "GBPUSD"]
    assert select_pairs(["EURUSD", "GBPUSD"], None) == ["USDCHF", "EURGBP", "GBPJPY"]
    assert select_pairs(["USDJPY"], MEASURED) == list(STATIC_CORRELATIONS["USDJPY"])
    # measured symbols first, then the fallback of the primary without data
    assert select_pairs(["GBPUSD", "USDJPY"], {("GBPJPY", "GBPUSD"): 0.9}) == ["GBPJPY", "EURJPY", "AUDJPY"]
    assert select_pairs(["NZDUSD"], {}) == []
    assert select_pairs(["EURUSD"], {}, limit=0) == []
    with pytest.raises(ValueError):
        select_pairs(["EURUSD"], {}, threshold=1.5)


def test_rolling_correlation_select_pairs_moves_from_fallback_to_measured():
    # By construction rho(EURUSD, USDCHF) ~ -1.0, rho(EURUSD, GBPUSD) ~ 0.78, rho(EURUSD, USDJPY) ~ -0.32.
    corr = RollingCorrelation(window=120)
    assert corr.select_pairs(["EURUSD"]) == ["USDCHF", "EURGBP", "GBPUSD"]
    for closes in correlated_closes(130):
        corr.update(closes)
    assert corr.select_pairs(["EURUSD"], threshold=0.6) == ["USDCHF", "GBPUSD"]
