"""The market-data worker against a real nats-server: indicators on md.<symbol> once the
windows fill, matching an independent computation from the same bars; correlations out."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import nats

from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.v1 import market_data_pb2
from mt5fleet.proto.validation import check_market_data
from mt5fleet.workers.adapters.feeds import Tick
from mt5fleet.workers.app.marketdata_service import MarketDataWorker
from mt5fleet.workers.core.bars import BarBuilder

START = 1_795_014_000_000  # a Wednesday, 10:00 New York
FRIDAY_CLOSE = int(dt.datetime(2026, 11, 20, 17, tzinfo=ZoneInfo("America/New_York")).timestamp()) * 1000


def _ticks(minutes: int):
    """Two symbols, a tick every 15 s, a deterministic wave and drift."""
    for step in range(minutes * 4):
        t = START + step * 15_000
        eur = 1.1 + 0.001 * math.sin(step / 7) + step * 1e-6
        gbp = 1.3 + 0.0012 * math.sin(step / 7 + 0.3) - step * 2e-6
        yield Tick("EURUSD", round(eur, 5), round(eur + 0.0001, 5), t)
        yield Tick("GBPUSD", round(gbp, 5), round(gbp + 0.00012, 5), t + 1)


async def test_indicators_and_correlations_reach_nats(fresh_nats_server):
    client = await nats.connect(fresh_nats_server.url)
    js = client.jetstream()
    await bootstrap.bootstrap(js, subjects.build_layout())
    now = [START]
    worker = MarketDataWorker(client, feed=None, now_ms=lambda: now[0], correlation_window=30)
    reference_bars = BarBuilder()
    closes = []
    for tick in _ticks(80):
        now[0] = tick.time_ms
        await worker.on_tick(tick)
        closes += [b.close for b in reference_bars.on_tick(tick.symbol, tick.bid, tick.ask, tick.time_ms)
                   if b.symbol == "EURUSD"]
    last = await js.get_msg(subjects.MARKET_DATA_STREAM, subject="md.EURUSD", direct=True)
    data = check_market_data(market_data_pb2.ClientMarketData.FromString(last.data), now[0])
    assert data.symbol == "EURUSD"
    # The last tick is 11:19 New York on a Wednesday, 16:19 in London: the market is open, out of
    # the rollover, London and New York both trade, and the week closes Friday 17:00 New York.
    session = data.session
    assert (session.is_open, session.in_rollover, session.active_sessions) == (True, False, ("london", "new_york"))
    assert (session.next_open_ms, session.next_close_ms) == (None, FRIDAY_CLOSE)
    assert abs(data.indicators.sma_20 - math.fsum(closes[-20:]) / 20) < 1e-9
    assert abs(data.indicators.sma_50 - math.fsum(closes[-50:]) / 50) < 1e-9
    assert 0 < data.indicators.rsi < 100
    corr = await js.get_msg(subjects.MARKET_DATA_STREAM, subject=subjects.CORRELATIONS_SUBJECT, direct=True)
    snapshot = market_data_pb2.CorrelationSnapshot.FromString(corr.data)
    pair = snapshot.pairs[0]
    assert {pair.symbol_a, pair.symbol_b} == {"EURUSD", "GBPUSD"} and pair.coefficient > 0.7
    await client.close()
