"""Incremental indicators against plain full-window recomputations (mt5fleet.workers.core.indicators)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from mt5fleet.proto.domain.market import Indicators
from mt5fleet.workers.adapters.wire import indicators_message
from mt5fleet.workers.core.indicators import Ema, IndicatorSet, Macd, RollingMean, RollingStd, WilderRsi

TOL = 1e-9


def random_walk(n: int, *, start: float = 1.08500, vol: float = 4e-4, digits: int = 5, seed: int = 7) -> list[float]:
    """Closes of a geometric random walk on the symbol's price grid, like M1 bars."""
    rng = random.Random(seed)
    price, closes = start, []
    for _ in range(n):
        price *= math.exp(rng.gauss(0.0, vol))
        closes.append(round(price, digits))
    return closes


# ------------------------------------------------------------------ plain references


def ref_sma(closes: list[float], n: int, t: int) -> float:
    return math.fsum(closes[t - n + 1: t + 1]) / n


def ref_pstd(closes: list[float], n: int, t: int) -> float:
    return statistics.pstdev(closes[t - n + 1: t + 1])


def ref_ema_series(values: list[float], n: int) -> list[float | None]:
    """Naive loop: None for the first n-1 inputs, the SMA of the first n, then the EMA recurrence."""
    alpha = 2 / (n + 1)
    out: list[float | None] = [None] * (n - 1)
    ema = sum(values[:n]) / n
    out.append(ema)
    for value in values[n:]:
        ema = alpha * value + (1 - alpha) * ema
        out.append(ema)
    return out


def ref_rsi_series(closes: list[float], n: int = 14) -> list[float | None]:
    out: list[float | None] = [None] * n
    gains = [max(closes[i] - closes[i - 1], 0.0) for i in range(1, len(closes))]
    losses = [max(closes[i - 1] - closes[i], 0.0) for i in range(1, len(closes))]
    avg_gain, avg_loss = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n - 1, len(gains)):
        if i >= n:
            avg_gain = (avg_gain * (n - 1) + gains[i]) / n
            avg_loss = (avg_loss * (n - 1) + losses[i]) / n
        out.append(100.0 if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss))
    return out


def ref_macd(closes: list[float]) -> tuple[list[float | None], list[float | None]]:
    fast, slow = ref_ema_series(closes, 12), ref_ema_series(closes, 26)
    line = [f - s if f is not None and s is not None else None for f, s in zip(fast, slow, strict=True)]
    first = line.index(next(v for v in line if v is not None))
    signal = [None] * first + ref_ema_series([v for v in line[first:]], 9)  # type: ignore[misc]
    return line, signal


def close_enough(actual: float | None, expected: float | None) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and abs(actual - expected) <= TOL


# ------------------------------------------------------------------ primitives


@pytest.mark.parametrize("n", [1, 20, 50])
def test_rolling_mean_matches_fsum_window(n):
    closes = random_walk(3000)
    mean = RollingMean(n)
    for t, close in enumerate(closes):
        value = mean.update(close)
        assert close_enough(value, ref_sma(closes, n, t) if t >= n - 1 else None), t


@pytest.mark.parametrize("start,digits", [(1.085, 5), (2350.0, 2)])
def test_rolling_std_matches_pstdev_window(start, digits):
    closes = random_walk(3000, start=start, digits=digits)
    std = RollingStd(20)
    for t, close in enumerate(closes):
        value = std.update(close)
        assert close_enough(value, ref_pstd(closes, 20, t) if t >= 19 else None), t
        if t >= 19:
            assert abs(std.mean - ref_sma(closes, 20, t)) <= TOL


@pytest.mark.parametrize("n", [9, 12, 26])
def test_ema_matches_naive_loop_seeded_with_the_sma(n):
    closes = random_walk(3000)
    ema, expected = Ema(n), ref_ema_series(closes, n)
    for t, close in enumerate(closes):
        assert close_enough(ema.update(close), expected[t]), t


def test_ema_seed_and_first_step_by_hand():
    ema = Ema(3)  # alpha 0.5
    assert [ema.update(x) for x in (1.0, 2.0, 3.0, 4.0)] == [None, None, 2.0, 3.0]


def test_wilder_rsi_matches_naive_loop():
    closes = random_walk(3000)
    rsi, expected = WilderRsi(14), ref_rsi_series(closes)
    for t, close in enumerate(closes):
        assert close_enough(rsi.update(close), expected[t]), t


@pytest.mark.parametrize("closes,expected", [
    ([1.0 + i / 100 for i in range(20)], 100.0),    # only gains
    ([2.0 - i / 100 for i in range(20)], 0.0),      # only losses
    ([1.5] * 20, 100.0),                            # flat: average loss 0 reads 100
])
def test_rsi_extremes(closes, expected):
    rsi = WilderRsi(14)
    values = [rsi.update(c) for c in closes]
    assert values[13] is None and values[14] == pytest.approx(expected)


def test_macd_line_and_signal_match_naive_loops():
    closes = random_walk(3000)
    macd = Macd(12, 26, 9)
    line, signal = ref_macd(closes)
    for t, close in enumerate(closes):
        got_line, got_signal = macd.update(close)
        assert close_enough(got_line, line[t]) and close_enough(got_signal, signal[t]), t
    assert line.index(next(v for v in line if v is not None)) == 25
    assert signal.index(next(v for v in signal if v is not None)) == 33


def test_bad_windows_and_inputs_are_refused():
    with pytest.raises(ValueError):
        RollingMean(0)
    with pytest.raises(ValueError):
        Macd(26, 12)
    with pytest.raises(ValueError):
        RollingStd(5).update(float("nan"))
    with pytest.raises(ValueError):
        IndicatorSet().update(0.0)


# ------------------------------------------------------------------ drift


def test_periodic_refresh_removes_the_residue_an_outlier_leaves():
    """A running sum loses the small values added next to a huge one; once the huge one
    leaves, the error would stay for ever. The refresh (every n updates) makes it exact."""
    values = [1e17] + [1.0] * 20
    never = RollingMean(3, refresh_every=10**9)
    default = RollingMean(3)
    for x in values:
        never.update(x)
        default.update(x)
    assert never.value != 1.0      # the residue a plain running sum keeps
    assert default.value == 1.0


def test_no_drift_after_a_long_run():
    closes = random_walk(200_000, start=2350.0, vol=3e-4, digits=2, seed=11)
    mean, std = RollingMean(20), RollingStd(20)
    for close in closes:
        mean.update(close)
        std.update(close)
    t = len(closes) - 1
    assert abs(mean.value - ref_sma(closes, 20, t)) <= TOL
    assert abs(std.value - ref_pstd(closes, 20, t)) <= TOL


# ------------------------------------------------------------------ IndicatorSet


def expected_indicators(closes: list[float], t: int, rsi: list, line: list, signal: list,
                        ema12: list, ema26: list) -> Indicators:
    def zero(v: float | None) -> float:
        return 0.0 if v is None else v

    sma20 = ref_sma(closes, 20, t) if t >= 19 else None
    std20 = ref_pstd(closes, 20, t) if t >= 19 else None
    return Indicators(
        sma_20=zero(sma20), sma_50=zero(ref_sma(closes, 50, t) if t >= 49 else None),
        ema_12=zero(ema12[t]), ema_26=zero(ema26[t]), macd_line=zero(line[t]), macd_signal=zero(signal[t]),
        rsi=zero(rsi[t]),
        bollinger_upper=zero(sma20 + 2 * std20 if sma20 is not None else None),
        bollinger_middle=zero(sma20),
        bollinger_lower=zero(sma20 - 2 * std20 if sma20 is not None else None))


def assert_indicators_close(got: Indicators, want: Indicators, t: int) -> None:
    for name in Indicators.__dataclass_fields__:
        assert abs(getattr(got, name) - getattr(want, name)) <= TOL, (t, name, got, want)


@pytest.mark.parametrize("start,digits", [(1.085, 5), (151.2, 3)])
def test_indicator_set_matches_references_over_thousands_of_bars(start, digits):
    closes = random_walk(5000, start=start, digits=digits, seed=3)
    rsi, (line, signal) = ref_rsi_series(closes), ref_macd(closes)
    ema12, ema26 = ref_ema_series(closes, 12), ref_ema_series(closes, 26)
    indicators = IndicatorSet()
    for t, close in enumerate(closes):
        got = indicators.update(close)
        assert_indicators_close(got, expected_indicators(closes, t, rsi, line, signal, ema12, ema26), t)
        assert got.bollinger_upper >= got.bollinger_middle >= got.bollinger_lower
    assert indicators.bars == len(closes)


def test_indicator_set_stays_exact_after_a_long_run():
    closes = random_walk(30_000, seed=5)
    rsi, (line, signal) = ref_rsi_series(closes), ref_macd(closes)
    ema12, ema26 = ref_ema_series(closes, 12), ref_ema_series(closes, 26)
    indicators = IndicatorSet()
    for close in closes:
        indicators.update(close)
    t = len(closes) - 1
    assert_indicators_close(indicators.values, expected_indicators(closes, t, rsi, line, signal, ema12, ema26), t)


def test_each_value_is_zero_until_its_window_is_full():
    indicators = IndicatorSet()
    first_nonzero: dict[str, int] = {}
    for count, close in enumerate(random_walk(60), start=1):
        values = indicators.update(close)
        for name in Indicators.__dataclass_fields__:
            if getattr(values, name) != 0.0:
                first_nonzero.setdefault(name, count)
    assert first_nonzero == {
        "ema_12": 12, "rsi": 15, "sma_20": 20, "bollinger_upper": 20, "bollinger_middle": 20,
        "bollinger_lower": 20, "ema_26": 26, "macd_line": 26, "macd_signal": 34, "sma_50": 50,
    }


def test_the_wire_message_mirrors_the_values():
    indicators = IndicatorSet()
    for close in random_walk(100):
        indicators.update(close)
    message = indicators_message(indicators.values)
    for name in Indicators.__dataclass_fields__:
        assert getattr(message, name) == getattr(indicators.values, name)
    assert indicators_message(IndicatorSet().values).sma_20 == 0.0
