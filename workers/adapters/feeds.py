"""Reference tick feeds for the market-data worker: the ``ReferenceTickFeed`` interface and
its live implementation.

``OandaPricingStream`` reads OANDA's v20 pricing stream
(``GET /v3/accounts/{id}/pricing/stream``): newline-delimited JSON, ``PRICE`` messages and a
``HEARTBEAT`` every 5 s. A bad line is counted, logged and skipped; a dropped or silent
stream (no heartbeat for 10 s) is reopened with exponential backoff.

The simulated feed sits behind the same interface but lives with the composition root
(``mt5fleet.launcher.simulated_feed``), so production code never imports the simulator;
the worker never sees the difference. Every feed yields ``Tick`` values with canonical
symbols (``EURUSD``; OANDA says ``EUR_USD``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, Protocol

import aiohttp

log = logging.getLogger("mt5fleet.worker.feeds")

PRACTICE_STREAM_URL = "https://stream-fxpractice.oanda.com"
LIVE_STREAM_URL = "https://stream-fxtrade.oanda.com"
STREAM_URLS = {"practice": PRACTICE_STREAM_URL, "live": LIVE_STREAM_URL}


@dataclass(frozen=True, slots=True)
class Tick:
    """One reference quote: canonical symbol, prices in the quote currency, unix ms."""

    symbol: str
    bid: float
    ask: float
    time_ms: int


class ReferenceTickFeed(Protocol):
    """A source of reference ticks. ``ticks`` is an async generator: it runs until
    ``close()`` is called (or the consumer stops iterating)."""

    def ticks(self) -> AsyncIterator[Tick]: ...

    async def close(self) -> None: ...


# ----------------------------------------------------------------------------- OANDA


def to_oanda(symbol: str) -> str:
    """EURUSD -> EUR_USD (six-letter FX and metal symbols)."""
    if len(symbol) != 6 or not symbol.isalpha():
        raise ValueError(f"no OANDA instrument name for {symbol!r}")
    return f"{symbol[:3]}_{symbol[3:]}"


def from_oanda(instrument: str) -> str:
    """EUR_USD -> EURUSD."""
    return instrument.replace("_", "")


@dataclass(frozen=True, repr=False)
class OandaConfig:
    """Where and what to stream. ``token`` is the API bearer token: never logged, masked in repr."""

    account_id: str
    token: str
    symbols: tuple[str, ...]
    base_url: str = PRACTICE_STREAM_URL
    heartbeat_timeout_s: float = 10.0   # OANDA sends one every 5 s: two missed means dead
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0

    @classmethod
    def for_environment(cls, environment: Literal["practice", "live"], *, account_id: str, token: str,
                        symbols: Iterable[str], **options: Any) -> OandaConfig:
        return cls(account_id=account_id, token=token, symbols=tuple(symbols), base_url=STREAM_URLS[environment],
                   **options)

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v3/accounts/{self.account_id}/pricing/stream"

    def __repr__(self) -> str:
        return (f"OandaConfig(account_id={self.account_id!r}, token='***', symbols={self.symbols!r}, "
                f"base_url={self.base_url!r})")


@dataclass(frozen=True, slots=True)
class StreamStats:
    prices: int = 0          # ticks yielded
    heartbeats: int = 0
    non_tradeable: int = 0   # prices skipped: not tradeable or no liquidity on a side
    malformed: int = 0       # lines skipped: bad JSON, missing or invalid fields
    ignored: int = 0         # well-formed messages of another type
    connects: int = 0        # streams opened (HTTP 200)
    reconnects: int = 0      # times the stream was lost and reopened


class MalformedMessage(ValueError):
    """A stream line that cannot be used; the message says why."""


class _StreamLost(Exception):
    """The stream ended, stalled or was refused: reconnect."""


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_UNIX = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?")


def parse_time_ms(text: Any) -> int:
    """OANDA time -> unix ms, truncated: RFC3339 with up to nanoseconds, or UNIX seconds."""
    if not isinstance(text, str):
        raise MalformedMessage(f"time is not a string: {text!r}")
    if match := _UNIX.fullmatch(text):
        return int(match[1]) * 1000 + int((match[2] or "").ljust(3, "0")[:3])
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise MalformedMessage(f"time {text!r} is not RFC3339")
    try:
        zone = UTC if match[8] == "Z" else timezone(
            (-1 if match[8][0] == "-" else 1) * timedelta(hours=int(match[8][1:3]), minutes=int(match[8][4:6])))
        year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
        moment = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError as exc:
        raise MalformedMessage(f"time {text!r} is not a valid instant: {exc}") from None
    whole_ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return whole_ms + int((match[7] or "").ljust(3, "0")[:3])


def _best_price(side: Any, name: str) -> float | None:
    """The first (best) level's price of a side; None when the side has no liquidity."""
    if not isinstance(side, list):
        raise MalformedMessage(f"{name} is not a list")
    if not side:
        return None
    level = side[0]
    raw = level.get("price") if isinstance(level, dict) else None
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise MalformedMessage(f"{name}[0].price missing or not a number")
    try:
        price = float(raw)
    except ValueError:
        raise MalformedMessage(f"{name}[0].price {raw!r} is not a number") from None
    if not (math.isfinite(price) and price > 0):
        raise MalformedMessage(f"{name}[0].price {raw!r} is not a positive price")
    return price


def parse_price(message: Mapping[str, Any], instruments: Mapping[str, str]) -> Tick | None:
    """A PRICE message -> Tick; None when it is not tradeable (or one side is empty)."""
    instrument = message.get("instrument")
    if not isinstance(instrument, str) or instrument not in instruments:
        raise MalformedMessage(f"instrument {instrument!r} was not subscribed")
    tradeable = message.get("tradeable", message.get("status", "tradeable") == "tradeable")
    if not isinstance(tradeable, bool):
        raise MalformedMessage(f"tradeable {tradeable!r} is not a boolean")
    time_ms = parse_time_ms(message.get("time"))
    bid, ask = _best_price(message.get("bids"), "bids"), _best_price(message.get("asks"), "asks")
    if not tradeable or bid is None or ask is None:
        return None
    if ask < bid:
        raise MalformedMessage(f"crossed quote: ask {ask} below bid {bid}")
    return Tick(instruments[instrument], bid, ask, time_ms)


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with +-20% jitter, so several workers do not reconnect in step."""
    base = min(max_s, initial_s * 2 ** min(failures, 30))
    return base * (0.8 + 0.4 * rng.random())


class OandaPricingStream:
    """OANDA v20 pricing stream as a ``ReferenceTickFeed``; see the module docstring."""

    MALFORMED_LOG_FIRST = 10  # then every MALFORMED_LOG_EVERY-th: a broken feed must not flood the log
    MALFORMED_LOG_EVERY = 1000

    def __init__(self, config: OandaConfig, *, session: aiohttp.ClientSession | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._instruments = {to_oanda(symbol): symbol for symbol in config.symbols}
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._closed = asyncio.Event()
        self._response: aiohttp.ClientResponse | None = None
        self._healthy = False
        self._counts = {f.name: 0 for f in fields(StreamStats)}

    def __repr__(self) -> str:
        return f"OandaPricingStream({self.config!r})"

    @property
    def stats(self) -> StreamStats:
        return StreamStats(**self._counts)

    async def ticks(self) -> AsyncIterator[Tick]:
        failures = 0
        while not self._closed.is_set():
            self._healthy = False
            reason = "stream ended"
            try:
                # aclosing: a consumer that stops iterating closes the HTTP response now, not at GC.
                async with aclosing(self._stream_once()) as stream:
                    async for tick in stream:
                        yield tick
            except (_StreamLost, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                # str(), never repr(): aiohttp's repr of a request carries its headers.
                reason = str(exc) if isinstance(exc, _StreamLost) else f"{type(exc).__name__}: {exc}"
            finally:
                self._response = None
            if self._closed.is_set():
                return
            # A stream that worked is retried after the initial delay; each failure in a row doubles it.
            failures = 0 if self._healthy else failures
            delay = backoff_delay(failures, self.config.backoff_initial_s, self.config.backoff_max_s, self._rng)
            failures += 1
            self._counts["reconnects"] += 1
            log.warning("oanda stream %s: %s; reconnecting in %.2f s", self.config.account_id, reason, delay)
            await self._pause(delay)

    async def close(self) -> None:
        self._closed.set()
        if self._response is not None:
            self._response.close()
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def _pause(self, delay: float) -> None:
        try:  # wakes early on close()
            await asyncio.wait_for(self._closed.wait(), timeout=delay)
        except TimeoutError:
            pass

    def _request_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}", "Accept-Datetime-Format": "RFC3339"}

    async def _stream_once(self) -> AsyncIterator[Tick]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        # No total/read timeout: a stream lasts for days; silence is caught by the heartbeat deadline.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=self.config.connect_timeout_s)
        params = {"instruments": ",".join(self._instruments)}
        async with self._session.get(self.config.url, params=params, headers=self._request_headers(),
                                     timeout=timeout) as response:
            self._response = response
            if response.status != 200:
                raise _StreamLost(f"refused with HTTP {response.status}: {(await response.text())[:300]!r}")
            self._counts["connects"] += 1
            log.info("oanda stream %s open for %s", self.config.account_id, ",".join(self._instruments))
            async for tick in self._read(response):
                yield tick

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[Tick]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.heartbeat_timeout_s
        while True:
            try:
                line = await asyncio.wait_for(response.content.readline(), timeout=max(deadline - loop.time(), 0))
            except TimeoutError:
                raise _StreamLost(f"no heartbeat for {self.config.heartbeat_timeout_s:g} s") from None
            if not line:
                raise _StreamLost("server closed the stream")
            kind, tick = self._handle(line)
            if kind == "HEARTBEAT":
                deadline = loop.time() + self.config.heartbeat_timeout_s
            if tick is not None:
                yield tick

    def _handle(self, line: bytes) -> tuple[str | None, Tick | None]:
        """Counts and classifies one line; never raises for bad content."""
        if not line.strip():
            return None, None
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise MalformedMessage("not a JSON object")
            kind = message.get("type")
            if kind == "HEARTBEAT":
                parse_time_ms(message.get("time"))
                self._healthy = True
                self._counts["heartbeats"] += 1
                return kind, None
            if kind != "PRICE":
                self._counts["ignored"] += 1
                return None, None
            tick = parse_price(message, self._instruments)
        # MalformedMessage, json.JSONDecodeError and UnicodeDecodeError are all ValueErrors;
        # absurdly nested JSON raises RecursionError.
        except (ValueError, RecursionError) as exc:
            self._skip_malformed(str(exc), line)
            return None, None
        self._healthy = True
        self._counts["prices" if tick else "non_tradeable"] += 1
        return kind, tick

    def _skip_malformed(self, reason: str, line: bytes) -> None:
        count = self._counts["malformed"] = self._counts["malformed"] + 1
        if count <= self.MALFORMED_LOG_FIRST or count % self.MALFORMED_LOG_EVERY == 0:
            log.warning("oanda stream: skipped malformed line #%d (%s): %.200r", count, reason, line)
