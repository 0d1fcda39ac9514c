"""Reference tick feeds: the simulated feed on an injected clock (mt5fleet.launcher.simulated_feed),
and the OANDA v20 pricing-stream client (mt5fleet.workers.adapters.feeds) against a local aiohttp
server speaking its format."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from waiting import wait_for

from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.launcher.simulated_feed import SimulatedFeed
from mt5fleet.workers.adapters.feeds import (
    LIVE_STREAM_URL,
    PRACTICE_STREAM_URL,
    MalformedMessage,
    OandaConfig,
    OandaPricingStream,
    ReferenceTickFeed,
    Tick,
    backoff_delay,
    from_oanda,
    parse_time_ms,
    to_oanda,
)
from mt5fleet.workers.core.bars import BarBuilder
from mt5fleet.workers.core.correlation import RollingCorrelation
from mt5fleet.workers.core.indicators import IndicatorSet

WEDNESDAY_NOON = 1_718_193_600.0     # 2024-06-12 12:00 UTC, market open (unix seconds)
SATURDAY_NOON = 1_718_452_800.0      # 2024-06-15 12:00 UTC, market closed
TOKEN = "s3cr3t-token-0123456789abcdef"
ACCOUNT = "101-004-1234567-001"


class StepClock:
    """Simulated time that moves only when the feed sleeps."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


async def take(feed: ReferenceTickFeed, count: int, timeout: float = 5.0) -> list[Tick]:
    async def collect() -> list[Tick]:
        out: list[Tick] = []
        async with aclosing(feed.ticks()) as ticks:
            async for tick in ticks:
                out.append(tick)
                if len(out) == count:
                    break
        return out

    return await asyncio.wait_for(collect(), timeout)


# ------------------------------------------------------------------ simulated feed


async def test_simulated_feed_is_deterministic_under_seed_and_clock():
    def make(seed: int) -> SimulatedFeed:
        return SimulatedFeed(ReferenceFeed(seed), ["EURUSD", "USDJPY"], clock=StepClock(WEDNESDAY_NOON), interval_s=1)

    first, again, other = await take(make(7), 50), await take(make(7), 50), await take(make(8), 50)
    assert first == again and first != other
    reference = ReferenceFeed(7)
    for tick in first:
        assert (tick.bid, tick.ask) == reference.quote(tick.symbol, tick.time_ms)
        assert tick.time_ms % 1000 == 0 and tick.ask > tick.bid
    assert first[0].time_ms == int(WEDNESDAY_NOON * 1000)


async def test_simulated_feed_sends_changes_only_and_nothing_while_closed():
    feed = SimulatedFeed(ReferenceFeed(1), ["EURUSD"], clock=StepClock(SATURDAY_NOON), interval_s=600)
    ticks = await take(feed, 20)
    reopen = ReferenceFeed(1).reopen_ms(int(SATURDAY_NOON * 1000))
    assert ticks[0].time_ms >= reopen
    quotes = [(t.bid, t.ask) for t in ticks]
    assert all(a != b for a, b in zip(quotes, quotes[1:], strict=False))


async def test_simulated_feed_close_ends_the_iteration():
    feed = SimulatedFeed(ReferenceFeed(1), ["EURUSD"], clock=StepClock(WEDNESDAY_NOON))
    seen = 0
    async for _ in feed.ticks():
        seen += 1
        if seen == 3:
            await feed.close()
    assert seen == 3
    with pytest.raises(KeyError):
        SimulatedFeed(ReferenceFeed(1), ["EURXYZ"], clock=StepClock(WEDNESDAY_NOON))


async def test_simulated_ticks_drive_bars_indicators_and_correlations():
    """The worker's pipeline end to end: ticks -> M1 bars -> per-minute rounds."""
    reference = ReferenceFeed(3)
    feed = SimulatedFeed(reference, ["EURUSD", "EURJPY", "USDJPY"], clock=StepClock(WEDNESDAY_NOON), interval_s=10)
    bars, corr = BarBuilder(60, point=reference.point), RollingCorrelation(window=60)
    indicators = {s: IndicatorSet() for s in feed.symbols}
    rounds: dict[int, dict[str, float]] = {}
    async with aclosing(feed.ticks()) as ticks:
        async for tick in ticks:
            for bar in bars.on_tick(tick.symbol, tick.bid, tick.ask, tick.time_ms):
                indicators[bar.symbol].update(bar.close)
                rounds.setdefault(bar.open_time_ms, {})[bar.symbol] = bar.close
            if len(rounds) > 70:
                break
    for open_time in sorted(rounds)[:-1]:    # the newest minute may still be incomplete
        corr.update(rounds[open_time], open_time)
    assert all(ind.values.sma_50 > 0 and 0 < ind.values.rsi < 100 for ind in indicators.values())
    assert bars.late_ticks == 0 and corr.matrix()[("EURJPY", "USDJPY")] > 0.3


# ------------------------------------------------------------------ OANDA parsing


def test_oanda_names_and_times():
    assert (to_oanda("EURUSD"), from_oanda("USD_JPY"), to_oanda("XAUUSD")) == ("EUR_USD", "USDJPY", "XAU_USD")
    with pytest.raises(ValueError):
        to_oanda("US30")
    assert parse_time_ms("2016-09-20T15:05:47.960449532Z") == 1_474_383_947_960
    assert parse_time_ms("2016-09-20T15:05:47Z") == 1_474_383_947_000
    assert parse_time_ms("2016-09-20T17:05:47.5+02:00") == 1_474_383_947_500
    assert parse_time_ms("1474383947.960449532") == 1_474_383_947_960
    for bad in ("2016-13-20T15:05:47Z", "yesterday", 1474383947, None):
        with pytest.raises(MalformedMessage):
            parse_time_ms(bad)


def test_backoff_grows_exponentially_to_a_cap_with_jitter():
    rng = random.Random(0)
    delays = [backoff_delay(n, 1.0, 60.0, rng) for n in range(10)]
    assert all(0.8 * min(60, 2**n) <= d <= 1.2 * min(60, 2**n) for n, d in enumerate(delays))
    assert max(delays) <= 72


def test_config_masks_the_token_and_knows_both_environments():
    live = OandaConfig.for_environment("live", account_id=ACCOUNT, token=TOKEN, symbols=["EURUSD"])
    assert live.base_url == LIVE_STREAM_URL and OandaConfig(ACCOUNT, TOKEN, ()).base_url == PRACTICE_STREAM_URL
    assert live.url == f"{LIVE_STREAM_URL}/v3/accounts/{ACCOUNT}/pricing/stream"
    for text in (repr(live), str(live), repr(OandaPricingStream(live))):
        assert TOKEN not in text and "***" in text


# ------------------------------------------------------------------ OANDA against a local server


def price(instrument: str, bid: str, ask: str, *, time: str = "2016-09-20T15:05:47.960449532Z",
          tradeable: bool = True) -> bytes:
    return json.dumps({
        "type": "PRICE", "instrument": instrument, "time": time, "tradeable": tradeable,
        "status": "tradeable" if tradeable else "non-tradeable",
        "bids": [{"price": bid, "liquidity": 10000000}, {"price": "0.5", "liquidity": 50000000}],
        "asks": [{"price": ask, "liquidity": 10000000}, {"price": "9.9", "liquidity": 50000000}],
        "closeoutBid": bid, "closeoutAsk": ask,
    }).encode() + b"\n"


HEARTBEAT = b'{"type":"HEARTBEAT","time":"2016-09-20T15:05:50.163791738Z"}\n'
HANG = "hang"      # keep the connection open and silent
REFUSE = "refuse"  # answer 401 like OANDA does for a bad token


@dataclass
class FakeOanda:
    """A v20 streaming endpoint: connection n plays ``sessions[n]`` then closes (or hangs)."""

    sessions: list[list[bytes | str]]
    requests: list[web.Request] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        script = self.sessions[min(len(self.requests), len(self.sessions)) - 1]
        if script == [REFUSE]:
            return web.json_response({"errorMessage": "Insufficient authorization to perform request."}, status=401)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for item in script:
            if item == HANG:
                await self.release.wait()
            else:
                await response.write(item)  # type: ignore[arg-type]
        return response


@pytest.fixture
async def oanda() -> AsyncIterator[FakeOanda]:
    server = FakeOanda(sessions=[])
    app = web.Application()
    app.router.add_get("/v3/accounts/{account}/pricing/stream", server.stream)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    yield server
    server.release.set()
    await runner.cleanup()


def client(server: FakeOanda, **options: float) -> OandaPricingStream:
    config = OandaConfig(account_id=ACCOUNT, token=TOKEN, symbols=("EURUSD", "USDJPY"), base_url=server.url,
                         backoff_initial_s=0.01, **options)
    return OandaPricingStream(config, rng=random.Random(0))


async def test_prices_parsed_heartbeats_ignored_bad_lines_skipped(oanda, caplog):
    caplog.set_level(logging.DEBUG)
    oanda.sessions = [[HEARTBEAT, price("EUR_USD", "1.11563", "1.11577"), b"{not json\n",
                       price("EUR_USD", "1.2", "1.3", time="late yesterday"), b'["a list"]\n',
                       price("GBP_USD", "1.3", "1.4"), price("EUR_USD", "1.2", "1.1"),
                       price("USD_JPY", "102.1", "102.2", tradeable=False), b'{"type":"SOMETHING_NEW"}\n',
                       HEARTBEAT, price("USD_JPY", "102.105", "102.118"), HANG]]
    stream = client(oanda)
    ticks = await take(stream, 2)
    assert ticks == [Tick("EURUSD", 1.11563, 1.11577, 1_474_383_947_960), Tick("USDJPY", 102.105, 102.118,
                                                                               1_474_383_947_960)]
    stats = stream.stats
    assert (stats.prices, stats.heartbeats, stats.malformed, stats.non_tradeable, stats.ignored) == (2, 2, 5, 1, 1)
    request = oanda.requests[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.query["instruments"] == "EUR_USD,USD_JPY" and request.match_info["account"] == ACCOUNT
    reasons = " ".join(r.getMessage() for r in caplog.records if "malformed" in r.getMessage())
    for reason in ("Expecting property name", "not RFC3339", "not a JSON object", "not subscribed", "crossed"):
        assert reason in reasons
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert TOKEN not in repr(stream)
    await stream.close()


async def test_reconnects_after_the_server_drops_the_stream(oanda, caplog):
    oanda.sessions = [[price("EUR_USD", "1.1", "1.1001")], [price("EUR_USD", "1.2", "1.2001"), HANG]]
    stream = client(oanda)
    ticks = await take(stream, 2)
    assert [t.bid for t in ticks] == [1.1, 1.2]
    assert (stream.stats.connects, stream.stats.reconnects, len(oanda.requests)) == (2, 1, 2)
    assert "server closed the stream" in caplog.text
    await stream.close()


async def test_reconnects_when_heartbeats_stop(oanda, caplog):
    oanda.sessions = [[HEARTBEAT, price("EUR_USD", "1.1", "1.1001"), HANG], [price("EUR_USD", "1.2", "1.2001"), HANG]]
    stream = client(oanda, heartbeat_timeout_s=0.3)
    ticks = await take(stream, 2)
    assert [t.bid for t in ticks] == [1.1, 1.2] and stream.stats.reconnects == 1
    assert "no heartbeat for 0.3 s" in caplog.text
    await stream.close()


async def test_refused_stream_is_retried_without_logging_the_token(oanda, caplog):
    caplog.set_level(logging.DEBUG)
    oanda.sessions = [[REFUSE], [REFUSE], [price("EUR_USD", "1.1", "1.1001"), HANG]]
    stream = client(oanda)
    assert [t.symbol for t in await take(stream, 1)] == ["EURUSD"]
    assert (stream.stats.connects, stream.stats.reconnects) == (1, 2)
    assert "HTTP 401" in caplog.text and "Insufficient authorization" in caplog.text
    assert TOKEN not in caplog.text
    await stream.close()


async def test_close_ends_a_silent_stream_promptly(oanda):
    oanda.sessions = [[HEARTBEAT, HANG]]
    stream = client(oanda)

    async def drain() -> list[Tick]:
        return [tick async for tick in stream.ticks()]

    task = asyncio.create_task(drain())
    await wait_for(lambda: oanda.requests, "the stream's request", timeout=5, interval=0.01)
    await stream.close()
    assert await asyncio.wait_for(task, 2) == []
