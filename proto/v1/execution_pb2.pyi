from mt5fleet.proto.v1 import commands_pb2 as _commands_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FILLED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PARTIAL: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_REJECTED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_EXPIRED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_DUPLICATE: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_FILLED: ExecutionStatus
EXECUTION_STATUS_PARTIAL: ExecutionStatus
EXECUTION_STATUS_REJECTED: ExecutionStatus
EXECUTION_STATUS_EXPIRED: ExecutionStatus
EXECUTION_STATUS_DUPLICATE: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus

class ExecutionReport(_message.Message):
    __slots__ = ("command_id", "user_id", "status", "retcode", "ticket", "fill_price", "filled_volume", "slippage_points", "received_at", "executed_at", "reason", "symbol", "command_type", "order_type", "signal_id", "requested_price", "reference_price", "slippage_reference_points", "order_ticket", "deal_ticket", "command_created_at", "signal_created_at", "reject_code", "sequence")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RETCODE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    FILL_PRICE_FIELD_NUMBER: _ClassVar[int]
    FILLED_VOLUME_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_PRICE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PRICE_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_REFERENCE_POINTS_FIELD_NUMBER: _ClassVar[int]
    ORDER_TICKET_FIELD_NUMBER: _ClassVar[int]
    DEAL_TICKET_FIELD_NUMBER: _ClassVar[int]
    COMMAND_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REJECT_CODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    user_id: str
    status: ExecutionStatus
    retcode: int
    ticket: int
    fill_price: float
    filled_volume: float
    slippage_points: float
    received_at: int
    executed_at: int
    reason: str
    symbol: str
    command_type: _commands_pb2.CommandType
    order_type: _commands_pb2.OrderType
    signal_id: str
    requested_price: float
    reference_price: float
    slippage_reference_points: float
    order_ticket: int
    deal_ticket: int
    command_created_at: int
    signal_created_at: int
    reject_code: str
    sequence: int
    def __init__(self, command_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., retcode: _Optional[int] = ..., ticket: _Optional[int] = ..., fill_price: _Optional[float] = ..., filled_volume: _Optional[float] = ..., slippage_points: _Optional[float] = ..., received_at: _Optional[int] = ..., executed_at: _Optional[int] = ..., reason: _Optional[str] = ..., symbol: _Optional[str] = ..., command_type: _Optional[_Union[_commands_pb2.CommandType, str]] = ..., order_type: _Optional[_Union[_commands_pb2.OrderType, str]] = ..., signal_id: _Optional[str] = ..., requested_price: _Optional[float] = ..., reference_price: _Optional[float] = ..., slippage_reference_points: _Optional[float] = ..., order_ticket: _Optional[int] = ..., deal_ticket: _Optional[int] = ..., command_created_at: _Optional[int] = ..., signal_created_at: _Optional[int] = ..., reject_code: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...
