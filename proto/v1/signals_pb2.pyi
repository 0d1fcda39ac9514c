from mt5fleet.proto.v1 import commands_pb2 as _commands_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UniversalSignal(_message.Message):
    __slots__ = ("signal_id", "symbol", "order_type", "reference_bid", "reference_ask", "entry", "stop_loss", "take_profit", "confidence", "created_at", "expires_at", "strategy", "source", "action", "target_signal_id", "close_fraction", "reason")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_BID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ASK_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    symbol: str
    order_type: _commands_pb2.OrderType
    reference_bid: float
    reference_ask: float
    entry: float
    stop_loss: float
    take_profit: float
    confidence: float
    created_at: int
    expires_at: int
    strategy: str
    source: str
    action: _commands_pb2.CommandType
    target_signal_id: str
    close_fraction: float
    reason: str
    def __init__(self, signal_id: _Optional[str] = ..., symbol: _Optional[str] = ..., order_type: _Optional[_Union[_commands_pb2.OrderType, str]] = ..., reference_bid: _Optional[float] = ..., reference_ask: _Optional[float] = ..., entry: _Optional[float] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., confidence: _Optional[float] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., strategy: _Optional[str] = ..., source: _Optional[str] = ..., action: _Optional[_Union[_commands_pb2.CommandType, str]] = ..., target_signal_id: _Optional[str] = ..., close_fraction: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...
