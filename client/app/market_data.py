"""The server's market data for the symbols the agent streams (indicators, sessions), one
plain subscription per symbol, followed as the streamed set changes; shown on the status page."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import market_data_pb2
from mt5fleet.proto.validation import ValidationError, decode


class MarketDataFeed:
    """Owns the subscriptions and the latest ClientMarketData of each symbol."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self.latest: dict[str, market_data_pb2.ClientMarketData] = {}
        self._subscriptions: dict[str, Any] = {}
        self._nc: Any = None

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subscriptions)

    def attach(self, nc: Any) -> None:
        """A new connection: the old one's subscriptions went with it."""
        self._nc = nc
        self._subscriptions.clear()

    async def follow(self, symbols: Iterable[str]) -> None:
        """Subscribe to exactly ``symbols``; nothing to do while disconnected (``attach`` and
        the next call catch up)."""
        if self._nc is None or not self._nc.is_connected:
            return
        wanted = set(symbols)
        for symbol in set(self._subscriptions) - wanted:
            await self._subscriptions.pop(symbol).unsubscribe()
        for symbol in sorted(wanted - set(self._subscriptions)):
            self._subscriptions[symbol] = await self._nc.subscribe(subjects.market_data_subject(symbol),
                                                                   cb=self._on_message)

    async def _on_message(self, message: Any) -> None:
        try:
            data = decode(market_data_pb2.ClientMarketData, message.data)
        except ValidationError:
            self.metrics.invalid.labels("ClientMarketData").inc()
            return
        self.latest[data.symbol] = data
