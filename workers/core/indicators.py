"""Incremental technical indicators on closed M1 bars: O(1) work per bar.

A market-data worker updates every symbol once a minute for months, so nothing here
recomputes a whole window per bar, and nothing may drift:

* Rolling sums (``RollingMean``, ``RollingStd``) are updated by adding the new value and
  removing the one leaving the window. Each add/remove rounds, and over millions of bars
  those errors would accumulate (a single huge outlier leaving the window can even leave
  a permanent residue). So every ``refresh_every`` updates (default: the window length)
  the state is recomputed exactly from the window with ``math.fsum``. That costs O(n)
  once per n bars — amortised O(1) — and bounds the error to what one window's worth of
  updates can add, however long the worker runs.
* ``RollingStd`` keeps the window's mean and sum of squared deviations (sliding Welford)
  rather than sum and sum of squares: prices sit far from zero (gold ~2350) and
  ``sum(x^2) - n*mean^2`` would cancel away most of the digits of a small variance.
* Exponential averages (``Ema``, ``WilderRsi``, ``Macd``) are recurrences whose rounding
  errors decay geometrically; they need no refresh. Each is seeded, as is conventional,
  with the simple mean of its first n inputs, so it has a value only after n inputs.

Each indicator's ``update`` returns its value, or ``None`` until its window is full;
``IndicatorSet`` turns that into the wire's "0 until the window is full".
"""

from __future__ import annotations

import math
from collections import deque

from mt5fleet.proto.domain.market import Indicators


def _check_window(n: int) -> None:
    if n < 1:
        raise ValueError(f"window must be at least 1, not {n}")


def _check_finite(x: float) -> None:
    if not math.isfinite(x):
        raise ValueError(f"indicator input must be finite, not {x!r}")


class RollingMean:
    """Mean of the last ``n`` values; running sum with a periodic exact (fsum) refresh."""

    def __init__(self, n: int, *, refresh_every: int | None = None) -> None:
        _check_window(n)
        self.n = n
        self._window: deque[float] = deque(maxlen=n)
        self._sum = 0.0
        self._refresh_every = refresh_every or n
        self._since_refresh = 0

    @property
    def ready(self) -> bool:
        return len(self._window) == self.n

    @property
    def value(self) -> float | None:
        return self._sum / self.n if self.ready else None

    def update(self, x: float) -> float | None:
        _check_finite(x)
        if self.ready:
            self._sum -= self._window[0]  # deque(maxlen) drops it on append
        self._window.append(x)
        self._sum += x
        self._since_refresh += 1
        if self._since_refresh >= self._refresh_every:
            self._sum = math.fsum(self._window)
            self._since_refresh = 0
        return self.value


class RollingStd:
    """Population standard deviation of the last ``n`` values (sliding Welford).

    Also exposes the window's ``mean``. Refreshed exactly every ``refresh_every`` updates.
    """

    def __init__(self, n: int, *, refresh_every: int | None = None) -> None:
        _check_window(n)
        self.n = n
        self._window: deque[float] = deque(maxlen=n)
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the window's mean
        self._refresh_every = refresh_every or n
        self._since_refresh = 0

    @property
    def ready(self) -> bool:
        return len(self._window) == self.n

    @property
    def mean(self) -> float | None:
        return self._mean if self.ready else None

    @property
    def value(self) -> float | None:
        return math.sqrt(max(self._m2, 0.0) / self.n) if self.ready else None

    def update(self, x: float) -> float | None:
        _check_finite(x)
        if self.ready:
            self._replace(self._window[0], x)
        else:
            self._add(x, len(self._window) + 1)
        self._window.append(x)
        self._since_refresh += 1
        if self._since_refresh >= self._refresh_every:
            self._refresh()
        return self.value

    def _add(self, x: float, count: int) -> None:
        delta = x - self._mean
        self._mean += delta / count
        self._m2 += delta * (x - self._mean)

    def _replace(self, old: float, new: float) -> None:
        new_mean = self._mean + (new - old) / self.n
        self._m2 += (new - old) * (new - new_mean + old - self._mean)
        self._mean = new_mean

    def _refresh(self) -> None:
        self._mean = math.fsum(self._window) / len(self._window)
        self._m2 = math.fsum((v - self._mean) ** 2 for v in self._window)
        self._since_refresh = 0


class Ema:
    """Exponential moving average, alpha = 2 / (n + 1), seeded with the SMA of the first n."""

    def __init__(self, n: int) -> None:
        _check_window(n)
        self.n = n
        self.alpha = 2.0 / (n + 1)
        self._seed: list[float] = []
        self._value: float | None = None

    @property
    def ready(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> float | None:
        return self._value

    def update(self, x: float) -> float | None:
        _check_finite(x)
        if self._value is not None:
            self._value += self.alpha * (x - self._value)
            return self._value
        self._seed.append(x)
        if len(self._seed) == self.n:
            self._value = math.fsum(self._seed) / self.n
            self._seed = []
        return self._value


class WilderRsi:
    """Wilder's RSI: the first averages are simple means of the first n gains/losses,
    then ``avg = (avg * (n - 1) + new) / n``. 100 when the average loss is 0 (so a
    perfectly flat window reads 100 as well). Needs n + 1 closes."""

    def __init__(self, n: int = 14) -> None:
        _check_window(n)
        self.n = n
        self._previous: float | None = None
        self._gains: list[float] = []
        self._losses: list[float] = []
        self._avg_gain: float | None = None
        self._avg_loss = 0.0

    @property
    def ready(self) -> bool:
        return self._avg_gain is not None

    @property
    def value(self) -> float | None:
        if self._avg_gain is None:
            return None
        if self._avg_loss == 0.0:
            return 100.0
        return 100.0 - 100.0 / (1.0 + self._avg_gain / self._avg_loss)

    def update(self, close: float) -> float | None:
        _check_finite(close)
        previous, self._previous = self._previous, close
        if previous is None:
            return None
        change = close - previous
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if self._avg_gain is not None:
            self._avg_gain = (self._avg_gain * (self.n - 1) + gain) / self.n
            self._avg_loss = (self._avg_loss * (self.n - 1) + loss) / self.n
        else:
            self._seed(gain, loss)
        return self.value

    def _seed(self, gain: float, loss: float) -> None:
        self._gains.append(gain)
        self._losses.append(loss)
        if len(self._gains) == self.n:
            self._avg_gain = math.fsum(self._gains) / self.n
            self._avg_loss = math.fsum(self._losses) / self.n
            self._gains, self._losses = [], []


class Macd:
    """MACD line = EMA(fast) - EMA(slow); signal = EMA(signal) of the line, fed from the
    first bar the line exists (so the signal needs slow + signal - 1 closes)."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"MACD needs 1 <= fast < slow, not fast={fast} slow={slow}")
        self.fast, self.slow, self.signal_ema = Ema(fast), Ema(slow), Ema(signal)

    @property
    def line(self) -> float | None:
        fast, slow = self.fast.value, self.slow.value
        return fast - slow if fast is not None and slow is not None else None

    @property
    def signal(self) -> float | None:
        return self.signal_ema.value

    def update(self, close: float) -> tuple[float | None, float | None]:
        self.fast.update(close)
        self.slow.update(close)
        line = self.line
        if line is not None:
            self.signal_ema.update(line)
        return line, self.signal


class IndicatorSet:
    """All indicators of one symbol: feed each closed bar's close, oldest first.

    Values are the wire's: 0.0 until each window is full (SMA50 after 50 closes, MACD
    signal after 34, RSI after 15 ...).
    """

    BOLLINGER_WIDTH = 2.0

    def __init__(self) -> None:
        self._sma_20 = RollingMean(20)
        self._sma_50 = RollingMean(50)
        self._std_20 = RollingStd(20)
        self._macd = Macd(12, 26, 9)
        self._rsi = WilderRsi(14)
        self.bars = 0
        self._values = Indicators()

    @property
    def values(self) -> Indicators:
        return self._values

    def update(self, close: float) -> Indicators:
        if not (math.isfinite(close) and close > 0):
            raise ValueError(f"a bar close must be a finite positive price, not {close!r}")
        sma_20 = self._sma_20.update(close)
        std_20 = self._std_20.update(close)
        line, signal = self._macd.update(close)
        upper = lower = None
        if sma_20 is not None and std_20 is not None:
            upper, lower = sma_20 + self.BOLLINGER_WIDTH * std_20, sma_20 - self.BOLLINGER_WIDTH * std_20
        self.bars += 1
        self._values = Indicators(
            sma_20=_or_zero(sma_20), sma_50=_or_zero(self._sma_50.update(close)),
            ema_12=_or_zero(self._macd.fast.value), ema_26=_or_zero(self._macd.slow.value),
            macd_line=_or_zero(line), macd_signal=_or_zero(signal), rsi=_or_zero(self._rsi.update(close)),
            bollinger_upper=_or_zero(upper), bollinger_middle=_or_zero(sma_20), bollinger_lower=_or_zero(lower))
        return self._values


def _or_zero(value: float | None) -> float:
    return 0.0 if value is None else value
