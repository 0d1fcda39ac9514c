from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Heartbeat(_message.Message):
    __slots__ = ("user_id", "agent_version", "terminal_connected", "trade_allowed", "outbox_depth", "last_publish_latency_ms", "last_command_latency_ms", "timestamp", "session_id", "uptime_s", "reconnects", "price_staleness_ms", "tick_rate", "commands_executed", "commands_rejected", "mt5_errors", "terminal_build", "p99_command_latency_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TRADE_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LAST_PUBLISH_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMAND_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    PRICE_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    TICK_RATE_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_EXECUTED_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    MT5_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_BUILD_FIELD_NUMBER: _ClassVar[int]
    P99_COMMAND_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    agent_version: str
    terminal_connected: bool
    trade_allowed: bool
    outbox_depth: int
    last_publish_latency_ms: float
    last_command_latency_ms: float
    timestamp: int
    session_id: str
    uptime_s: int
    reconnects: int
    price_staleness_ms: float
    tick_rate: float
    commands_executed: int
    commands_rejected: int
    mt5_errors: int
    terminal_build: str
    p99_command_latency_ms: float
    def __init__(self, user_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., terminal_connected: _Optional[bool] = ..., trade_allowed: _Optional[bool] = ..., outbox_depth: _Optional[int] = ..., last_publish_latency_ms: _Optional[float] = ..., last_command_latency_ms: _Optional[float] = ..., timestamp: _Optional[int] = ..., session_id: _Optional[str] = ..., uptime_s: _Optional[int] = ..., reconnects: _Optional[int] = ..., price_staleness_ms: _Optional[float] = ..., tick_rate: _Optional[float] = ..., commands_executed: _Optional[int] = ..., commands_rejected: _Optional[int] = ..., mt5_errors: _Optional[int] = ..., terminal_build: _Optional[str] = ..., p99_command_latency_ms: _Optional[float] = ...) -> None: ...
