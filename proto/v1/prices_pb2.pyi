from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientPriceStream(_message.Message):
    __slots__ = ("user_id", "broker_name", "account_number", "prices", "batch_timestamp", "sequence")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    broker_name: str
    account_number: str
    prices: _containers.RepeatedCompositeFieldContainer[ClientPrice]
    batch_timestamp: int
    sequence: int
    def __init__(self, user_id: _Optional[str] = ..., broker_name: _Optional[str] = ..., account_number: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[ClientPrice, _Mapping]]] = ..., batch_timestamp: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class ClientPrice(_message.Message):
    __slots__ = ("symbol", "bid", "ask", "spread", "timestamp", "broker_server", "broker_symbol", "digits")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BROKER_SERVER_FIELD_NUMBER: _ClassVar[int]
    BROKER_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bid: float
    ask: float
    spread: float
    timestamp: int
    broker_server: str
    broker_symbol: str
    digits: int
    def __init__(self, symbol: _Optional[str] = ..., bid: _Optional[float] = ..., ask: _Optional[float] = ..., spread: _Optional[float] = ..., timestamp: _Optional[int] = ..., broker_server: _Optional[str] = ..., broker_symbol: _Optional[str] = ..., digits: _Optional[int] = ...) -> None: ...
