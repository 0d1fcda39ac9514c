"""The simulated reference feed: the seeded ``ReferenceFeed`` of the simulated broker behind
the market-data worker's ``ReferenceTickFeed`` interface, sampled on an injected clock, so a
demo or a test replays the same ticks for the same seed and clock.

It lives in the composition root, not in the workers: production code never imports the
simulator, and ``mt5fleet worker marketdata`` uses it only when told ``--feed simulated``.

Like the wall clock it follows by default, the feed is silent while the FX market is
closed; ``$MT5FLEET_SIM_START_MS`` (unix ms) starts its clock at another instant instead (a
demo or a test at the weekend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.proto.domain.clock import AcceleratedClock, Clock, SystemClock, now_ms
from mt5fleet.workers.adapters.feeds import Tick

SIM_START_ENV = "MT5FLEET_SIM_START_MS"


class SimulatedFeed:
    """Quotes of a seeded ``ReferenceFeed`` every ``interval_s`` of the injected clock.

    Like a real stream it sends a symbol's quote only when it changed, and nothing while
    the FX market is closed (the reference prices stand still at weekends anyway).
    """

    def __init__(self, feed: ReferenceFeed, symbols: Iterable[str] | None = None, *, clock: Clock,
                 interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval must be positive, not {interval_s}")
        self._feed = feed
        self._symbols = tuple(symbols) if symbols is not None else feed.symbols
        for symbol in self._symbols:
            feed.digits(symbol)  # KeyError now rather than on the first tick
        self._clock = clock
        self._interval_s = interval_s
        self._closed = False

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    async def ticks(self) -> AsyncIterator[Tick]:
        last: dict[str, tuple[float, float]] = {}
        while not self._closed:
            t_ms = now_ms(self._clock)
            if self._feed.is_open(t_ms):
                for symbol in self._symbols:
                    quote = self._feed.quote(symbol, t_ms)
                    if last.get(symbol) != quote and not self._closed:
                        last[symbol] = quote
                        yield Tick(symbol, quote[0], quote[1], t_ms)
            await self._clock.sleep(self._interval_s)

    async def close(self) -> None:
        self._closed = True


def simulated_feed(symbols: Iterable[str], environ: Mapping[str, str]) -> tuple[SimulatedFeed, Clock]:
    """The worker's simulated feed (seed 1; every canonical symbol when ``symbols`` is
    empty) and the clock its ticks are stamped with, started at ``$MT5FLEET_SIM_START_MS``."""
    clock = simulated_clock(environ.get(SIM_START_ENV, ""))
    return SimulatedFeed(ReferenceFeed(seed=1), tuple(symbols) or None, clock=clock), clock


def simulated_clock(start_ms: str) -> Clock:
    if not start_ms:
        return SystemClock()
    try:
        start = int(start_ms)
    except ValueError:
        raise ValueError(f"{SIM_START_ENV} must be unix milliseconds, not {start_ms!r}") from None
    return AcceleratedClock(start / 1000, 1.0)  # real-time speed from that instant
