"""What an agent reports of its account and itself: account snapshots and heartbeats.

Conventions: see the package (``mt5fleet.proto.domain``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mt5fleet.proto.domain.trading import AccountType


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Key figures of one trading account (AccountProfile); money in ``currency``.

    The risk profile and preferences an agent echoes are not part of it: the
    authoritative copies travel in ClientConfig.
    """

    user_id: str
    account_number: str
    currency: str
    balance: float
    equity: float
    margin_used: float
    margin_free: float
    time_ms: int
    account_type: AccountType = AccountType.UNSPECIFIED
    broker_name: str = ""
    server_name: str = ""
    margin_level: float = 0.0    # percent; 0 without positions
    profit: float = 0.0
    leverage: int = 0
    hedging: bool = False
    open_positions: int = 0
    day_start_equity: float = 0.0
    peak_equity: float = 0.0
    sequence: int = 0

    @property
    def drawdown(self) -> float:
        """Fraction of peak equity lost (0 when no peak is known)."""
        if self.peak_equity <= 0:
            return 0.0
        return max(0.0, (self.peak_equity - self.equity) / self.peak_equity)


@dataclass(frozen=True, slots=True)
class HeartbeatInfo:
    """Agent liveness and key figures (Heartbeat)."""

    user_id: str
    agent_version: str
    session_id: str
    time_ms: int
    terminal_connected: bool
    trade_allowed: bool
    outbox_depth: int = 0
    last_publish_latency_ms: float = 0.0
    last_command_latency_ms: float = 0.0
    p99_command_latency_ms: float = 0.0
    uptime_s: int = 0
    reconnects: int = 0
    price_staleness_ms: float = 0.0
    tick_rate: float = 0.0
    commands_executed: int = 0
    commands_rejected: int = 0
    mt5_errors: int = 0
    terminal_build: str = ""
