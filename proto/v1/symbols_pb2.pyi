from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SymbolSpec(_message.Message):
    __slots__ = ("symbol", "broker_symbol", "digits", "point", "contract_size", "tick_size", "tick_value", "volume_min", "volume_max", "volume_step", "stops_level", "freeze_level", "filling_modes", "trade_mode", "currency_base", "currency_profit", "currency_margin", "spread", "trade_calc_mode")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BROKER_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MIN_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MAX_FIELD_NUMBER: _ClassVar[int]
    VOLUME_STEP_FIELD_NUMBER: _ClassVar[int]
    STOPS_LEVEL_FIELD_NUMBER: _ClassVar[int]
    FREEZE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    FILLING_MODES_FIELD_NUMBER: _ClassVar[int]
    TRADE_MODE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_BASE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_PROFIT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    TRADE_CALC_MODE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    broker_symbol: str
    digits: int
    point: float
    contract_size: float
    tick_size: float
    tick_value: float
    volume_min: float
    volume_max: float
    volume_step: float
    stops_level: int
    freeze_level: int
    filling_modes: int
    trade_mode: int
    currency_base: str
    currency_profit: str
    currency_margin: str
    spread: int
    trade_calc_mode: int
    def __init__(self, symbol: _Optional[str] = ..., broker_symbol: _Optional[str] = ..., digits: _Optional[int] = ..., point: _Optional[float] = ..., contract_size: _Optional[float] = ..., tick_size: _Optional[float] = ..., tick_value: _Optional[float] = ..., volume_min: _Optional[float] = ..., volume_max: _Optional[float] = ..., volume_step: _Optional[float] = ..., stops_level: _Optional[int] = ..., freeze_level: _Optional[int] = ..., filling_modes: _Optional[int] = ..., trade_mode: _Optional[int] = ..., currency_base: _Optional[str] = ..., currency_profit: _Optional[str] = ..., currency_margin: _Optional[str] = ..., spread: _Optional[int] = ..., trade_calc_mode: _Optional[int] = ...) -> None: ...

class SymbolSpecList(_message.Message):
    __slots__ = ("user_id", "specs", "timestamp")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    specs: _containers.RepeatedCompositeFieldContainer[SymbolSpec]
    timestamp: int
    def __init__(self, user_id: _Optional[str] = ..., specs: _Optional[_Iterable[_Union[SymbolSpec, _Mapping]]] = ..., timestamp: _Optional[int] = ...) -> None: ...
