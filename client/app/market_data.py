"""The server's market data for the symbols the agent streams (indicators, sessions), one
plain subscription per symbol, followed as the streamed set changes; shown on the status page.

The set is the ClientConfig's md symbols (``ConfigWatch.market_data_symbols``: what the
operator grants, read over the current connection), never the local file's. A connection
that drops loses its md subscriptions at once: nats-py would replay them on reconnecting,
before the config is read again, and a downgrade while away would make them violations.
A subscription the server refuses anyway (a JWT older than the config) is counted
(``mt5fleet_agent_md_refused_total``), logged once and not asked for again on this
connection; it never costs the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from typing import Any

from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import market_data_pb2
from mt5fleet.proto.validation import ValidationError, decode

log = logging.getLogger("mt5fleet.agent.market_data")
nats_log = logging.getLogger("mt5fleet.nats")
# nats-py hands the server's -ERR lower-cased: 'nats: permissions violation for subscription to "md.eurusd"'.
_REFUSED = re.compile(r'permissions violation for subscription to "md\.([^"]+)"', re.IGNORECASE)


class MarketDataFeed:
    """Owns the subscriptions and the latest ClientMarketData of each symbol."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self.latest: dict[str, market_data_pb2.ClientMarketData] = {}
        self._subscriptions: dict[str, Any] = {}
        self._refused: set[str] = set()   # lower-cased symbols this connection may not read
        self._lock = asyncio.Lock()
        self._nc: Any = None

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subscriptions)

    @property
    def refused(self) -> frozenset[str]:
        return frozenset(self._refused)

    def attach(self, nc: Any) -> None:
        """A new connection: the old one's subscriptions went with it."""
        self._nc = nc
        self._subscriptions.clear()
        self._refused.clear()

    async def suspend(self) -> None:
        """The connection is lost (nats-py's disconnected callback): forget the md
        subscriptions without a word to the server, so nats-py does not replay them when it
        reconnects (perhaps on new, narrower credentials); ``follow`` subscribes again once
        the config has been read over the connection. A refusal is forgotten too: the next
        connection may carry new grants."""
        async with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, {}
            self._refused.clear()
            for subscription in subscriptions.values():
                with contextlib.suppress(Exception):  # while reconnecting: removed locally only
                    await subscription.unsubscribe()

    async def follow(self, symbols: Iterable[str] | None) -> None:
        """Subscribe to exactly ``symbols`` (less those refused on this connection);
        ``None``: not known yet on this connection, nothing to do. Nothing to do while
        disconnected either (``attach``, the config's re-read and the next call catch up)."""
        if symbols is None:
            return
        async with self._lock:
            if self._nc is None or not self._nc.is_connected:
                return
            wanted = {s for s in symbols if s.lower() not in self._refused}
            for symbol in set(self._subscriptions) - wanted:
                with contextlib.suppress(Exception):
                    await self._subscriptions.pop(symbol).unsubscribe()
            for symbol in set(self.latest) - wanted:
                del self.latest[symbol]
            for symbol in sorted(wanted - set(self._subscriptions)):
                if not self._nc.is_connected:  # lost meanwhile: nothing for nats-py to replay
                    return
                self._subscriptions[symbol] = await self._nc.subscribe(subjects.market_data_subject(symbol),
                                                                       cb=self._on_message)

    async def on_server_error(self, exc: Exception) -> None:
        """The connection's error callback. A refused md subscription is this feed's to
        count and drop; anything else is logged as ``natsconn`` logs it."""
        match = _REFUSED.search(str(exc))
        if match is None:
            nats_log.warning("nats: %s: %s", type(exc).__name__, exc)
            return
        refused = match.group(1).lower()
        self.metrics.md_refused.inc()
        async with self._lock:
            if refused in self._refused:
                return
            self._refused.add(refused)
            symbol = next((s for s in self._subscriptions if s.lower() == refused), None)
            if symbol is not None:
                with contextlib.suppress(Exception):  # the server holds nothing: a local removal
                    await self._subscriptions.pop(symbol).unsubscribe()
                self.latest.pop(symbol, None)
        log.warning("the server refused md.%s on this connection (its credentials predate the config?): "
                    "not asked for again until the next connection", symbol or refused)

    async def _on_message(self, message: Any) -> None:
        try:
            data = decode(market_data_pb2.ClientMarketData, message.data)
        except ValidationError:
            self.metrics.invalid.labels("ClientMarketData").inc()
            return
        if data.symbol in self._subscriptions:
            self.latest[data.symbol] = data
