from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPEN_POSITION: _ClassVar[CommandType]
    CLOSE_POSITION: _ClassVar[CommandType]
    MODIFY_POSITION: _ClassVar[CommandType]
    CLOSE_ALL: _ClassVar[CommandType]

class OrderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUY: _ClassVar[OrderType]
    SELL: _ClassVar[OrderType]
    BUY_LIMIT: _ClassVar[OrderType]
    SELL_LIMIT: _ClassVar[OrderType]
    BUY_STOP: _ClassVar[OrderType]
    SELL_STOP: _ClassVar[OrderType]
OPEN_POSITION: CommandType
CLOSE_POSITION: CommandType
MODIFY_POSITION: CommandType
CLOSE_ALL: CommandType
BUY: OrderType
SELL: OrderType
BUY_LIMIT: OrderType
SELL_LIMIT: OrderType
BUY_STOP: OrderType
SELL_STOP: OrderType

class TradingCommand(_message.Message):
    __slots__ = ("command_id", "user_id", "type", "symbol", "order_type", "lot_size", "entry_price", "stop_loss", "take_profit", "reason", "confidence_score", "expires_at", "original_entry", "price_adjustment", "adjustment_reason", "position_ticket", "target_command_id", "max_deviation_points", "created_at", "signal_id", "signal_created_at", "reference_price", "quote_bid", "quote_ask", "quote_time", "sizing_reason")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_ENTRY_FIELD_NUMBER: _ClassVar[int]
    PRICE_ADJUSTMENT_FIELD_NUMBER: _ClassVar[int]
    ADJUSTMENT_REASON_FIELD_NUMBER: _ClassVar[int]
    POSITION_TICKET_FIELD_NUMBER: _ClassVar[int]
    TARGET_COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVIATION_POINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PRICE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_BID_FIELD_NUMBER: _ClassVar[int]
    QUOTE_ASK_FIELD_NUMBER: _ClassVar[int]
    QUOTE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZING_REASON_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    user_id: str
    type: CommandType
    symbol: str
    order_type: OrderType
    lot_size: float
    entry_price: float
    stop_loss: float
    take_profit: float
    reason: str
    confidence_score: float
    expires_at: int
    original_entry: float
    price_adjustment: float
    adjustment_reason: str
    position_ticket: int
    target_command_id: str
    max_deviation_points: int
    created_at: int
    signal_id: str
    signal_created_at: int
    reference_price: float
    quote_bid: float
    quote_ask: float
    quote_time: int
    sizing_reason: str
    def __init__(self, command_id: _Optional[str] = ..., user_id: _Optional[str] = ..., type: _Optional[_Union[CommandType, str]] = ..., symbol: _Optional[str] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., lot_size: _Optional[float] = ..., entry_price: _Optional[float] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., reason: _Optional[str] = ..., confidence_score: _Optional[float] = ..., expires_at: _Optional[int] = ..., original_entry: _Optional[float] = ..., price_adjustment: _Optional[float] = ..., adjustment_reason: _Optional[str] = ..., position_ticket: _Optional[int] = ..., target_command_id: _Optional[str] = ..., max_deviation_points: _Optional[int] = ..., created_at: _Optional[int] = ..., signal_id: _Optional[str] = ..., signal_created_at: _Optional[int] = ..., reference_price: _Optional[float] = ..., quote_bid: _Optional[float] = ..., quote_ask: _Optional[float] = ..., quote_time: _Optional[int] = ..., sizing_reason: _Optional[str] = ...) -> None: ...
