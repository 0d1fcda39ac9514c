"""Quotes held while NATS is unreachable: best effort, bounded, newest kept.

A stale quote is worth nothing to the server (it refuses commands from quotes older than a
few seconds), so when the buffer is full the oldest quote goes and is counted, never the
newest. Account updates and execution reports do not come here: they go to the outbox.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from mt5fleet.proto.domain.market import Quote

DEFAULT_CAPACITY = 1_000

T = TypeVar("T")


class PriceBuffer(Generic[T]):
    """A ring of at most ``capacity`` items; ``dropped`` counts the ones pushed out."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)
        self.dropped = 0

    @property
    def capacity(self) -> int:
        return self._items.maxlen or 0

    def add(self, quote: T) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1  # deque(maxlen) discards the oldest silently: count it here
        self._items.append(quote)

    def drain(self) -> list[T]:
        """Everything buffered, oldest first; the buffer is empty afterwards."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


QuoteBuffer = PriceBuffer[Quote]
