"""Orders and their outcomes: order and command types, signals, commands, executions.

Conventions: see the package (``mt5fleet.proto.domain``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# ----------------------------------------------------------------------------- enums
# Values equal the protobuf enum numbers (and, for OrderType, MT5's ORDER_TYPE_*), so
# converting is ``OrderType(msg.order_type)`` once the value is known to be defined.


class OrderType(enum.IntEnum):
    BUY = 0
    SELL = 1
    BUY_LIMIT = 2
    SELL_LIMIT = 3
    BUY_STOP = 4
    SELL_STOP = 5

    @property
    def is_buy(self) -> bool:
        """BUY family: opened at the ask, SL below and TP above the entry."""
        return self in (OrderType.BUY, OrderType.BUY_LIMIT, OrderType.BUY_STOP)

    @property
    def is_sell(self) -> bool:
        return not self.is_buy

    @property
    def is_pending(self) -> bool:
        """Limit and stop orders wait for the market to reach their entry price."""
        return self not in (OrderType.BUY, OrderType.SELL)

    @property
    def is_market(self) -> bool:
        return not self.is_pending


class CommandType(enum.IntEnum):
    OPEN_POSITION = 0
    CLOSE_POSITION = 1
    MODIFY_POSITION = 2
    CLOSE_ALL = 3

    @property
    def needs_target(self) -> bool:
        """CLOSE and MODIFY act on one existing position, which must be named."""
        return self in (CommandType.CLOSE_POSITION, CommandType.MODIFY_POSITION)

    @property
    def opens(self) -> bool:
        return self is CommandType.OPEN_POSITION


class ExecutionStatus(enum.IntEnum):
    UNSPECIFIED = 0
    FILLED = 1
    PARTIAL = 2
    REJECTED = 3
    EXPIRED = 4
    DUPLICATE = 5
    FAILED = 6

    @property
    def is_fill(self) -> bool:
        """The broker executed (part of) the command: a position or order changed."""
        return self in (ExecutionStatus.FILLED, ExecutionStatus.PARTIAL)

    @property
    def is_refusal(self) -> bool:
        """Nothing was executed and the report must say why."""
        return self in (ExecutionStatus.REJECTED, ExecutionStatus.FAILED)


class AccountType(enum.IntEnum):
    UNSPECIFIED = 0
    DEMO = 1
    LIVE = 2
    CONTEST = 3


class SubscriptionTier(enum.IntEnum):
    UNSPECIFIED = 0
    FREE = 1
    PRO = 2
    ENTERPRISE = 3
    CUSTOM = 4


@dataclass(frozen=True, slots=True)
class Signal:
    """A strategy decision on the reference feed (UniversalSignal), before any broker."""

    signal_id: str
    symbol: str
    action: CommandType
    order_type: OrderType
    reference_bid: float
    reference_ask: float
    entry: float | None          # None: at market
    stop_loss: float | None
    take_profit: float | None
    confidence: float
    created_at_ms: int
    expires_at_ms: int
    strategy: str = ""
    source: str = ""
    target_signal_id: str | None = None
    close_fraction: float = 0.0  # 0: close everything
    reason: str = ""

    @property
    def reference_price(self) -> float:
        """The side a market order of this direction would trade at: ask to buy, bid to sell."""
        return self.reference_ask if self.order_type.is_buy else self.reference_bid

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


@dataclass(frozen=True, slots=True)
class Command:
    """One user's adjusted order (TradingCommand)."""

    command_id: str
    user_id: str
    type: CommandType
    symbol: str | None           # None only for CLOSE_ALL: every symbol
    order_type: OrderType
    lot_size: float              # 0 on CLOSE: the whole position
    entry_price: float | None
    stop_loss: float | None
    take_profit: float | None
    created_at_ms: int
    expires_at_ms: int
    confidence: float = 0.0
    reason: str = ""
    position_ticket: int | None = None
    target_command_id: str | None = None
    max_deviation_points: int = 0
    signal_id: str | None = None
    signal_created_at_ms: int | None = None
    original_entry: float | None = None
    price_adjustment: float = 0.0
    adjustment_reason: str = ""
    reference_price: float | None = None
    quote_bid: float | None = None
    quote_ask: float | None = None
    quote_time_ms: int | None = None
    sizing_reason: str = ""          # the worker's words: why this lot size

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


@dataclass(frozen=True, slots=True)
class Execution:
    """The agent's answer to one command (ExecutionReport)."""

    command_id: str
    user_id: str
    status: ExecutionStatus
    command_type: CommandType
    order_type: OrderType
    received_at_ms: int
    executed_at_ms: int
    symbol: str | None = None
    retcode: int = 0
    position_ticket: int | None = None
    order_ticket: int | None = None
    deal_ticket: int | None = None
    fill_price: float | None = None
    filled_volume: float = 0.0
    slippage_points: float = 0.0
    slippage_reference_points: float = 0.0
    requested_price: float | None = None
    reference_price: float | None = None
    signal_id: str | None = None
    command_created_at_ms: int | None = None
    signal_created_at_ms: int | None = None
    reason: str = ""
    reject_code: str = ""
    sequence: int = 0

    @property
    def agent_latency_ms(self) -> int:
        """Time from the agent receiving the command to the broker's answer."""
        return self.executed_at_ms - self.received_at_ms
