from mt5fleet.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SizingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIZING_MODE_RISK_PERCENT: _ClassVar[SizingMode]
    SIZING_MODE_FIXED_LOT: _ClassVar[SizingMode]
    SIZING_MODE_BALANCE_MULTIPLIER: _ClassVar[SizingMode]
    SIZING_MODE_EQUITY_MULTIPLIER: _ClassVar[SizingMode]
SIZING_MODE_RISK_PERCENT: SizingMode
SIZING_MODE_FIXED_LOT: SizingMode
SIZING_MODE_BALANCE_MULTIPLIER: SizingMode
SIZING_MODE_EQUITY_MULTIPLIER: SizingMode

class AccountProfile(_message.Message):
    __slots__ = ("user_id", "account_number", "broker_name", "server_name", "account_type", "base_currency", "balance", "equity", "margin_used", "margin_free", "risk_profile", "preferences", "timestamp", "leverage", "margin_level", "profit", "hedging", "open_positions", "day_start_equity", "peak_equity", "sequence")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BASE_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_USED_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FREE_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LEVERAGE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PROFIT_FIELD_NUMBER: _ClassVar[int]
    HEDGING_FIELD_NUMBER: _ClassVar[int]
    OPEN_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    DAY_START_EQUITY_FIELD_NUMBER: _ClassVar[int]
    PEAK_EQUITY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    account_number: str
    broker_name: str
    server_name: str
    account_type: _common_pb2.AccountType
    base_currency: str
    balance: float
    equity: float
    margin_used: float
    margin_free: float
    risk_profile: RiskProfile
    preferences: TradingPreferences
    timestamp: int
    leverage: int
    margin_level: float
    profit: float
    hedging: bool
    open_positions: int
    day_start_equity: float
    peak_equity: float
    sequence: int
    def __init__(self, user_id: _Optional[str] = ..., account_number: _Optional[str] = ..., broker_name: _Optional[str] = ..., server_name: _Optional[str] = ..., account_type: _Optional[_Union[_common_pb2.AccountType, str]] = ..., base_currency: _Optional[str] = ..., balance: _Optional[float] = ..., equity: _Optional[float] = ..., margin_used: _Optional[float] = ..., margin_free: _Optional[float] = ..., risk_profile: _Optional[_Union[RiskProfile, _Mapping]] = ..., preferences: _Optional[_Union[TradingPreferences, _Mapping]] = ..., timestamp: _Optional[int] = ..., leverage: _Optional[int] = ..., margin_level: _Optional[float] = ..., profit: _Optional[float] = ..., hedging: _Optional[bool] = ..., open_positions: _Optional[int] = ..., day_start_equity: _Optional[float] = ..., peak_equity: _Optional[float] = ..., sequence: _Optional[int] = ...) -> None: ...

class RiskProfile(_message.Message):
    __slots__ = ("max_risk_per_trade", "max_daily_loss", "max_drawdown", "allow_news_trading", "allowed_symbols", "max_spread_points", "max_lot", "max_deviation_points")
    MAX_RISK_PER_TRADE_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_LOSS_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEWS_TRADING_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPREAD_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_LOT_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVIATION_POINTS_FIELD_NUMBER: _ClassVar[int]
    max_risk_per_trade: float
    max_daily_loss: float
    max_drawdown: float
    allow_news_trading: bool
    allowed_symbols: _containers.RepeatedScalarFieldContainer[str]
    max_spread_points: int
    max_lot: float
    max_deviation_points: int
    def __init__(self, max_risk_per_trade: _Optional[float] = ..., max_daily_loss: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., allow_news_trading: _Optional[bool] = ..., allowed_symbols: _Optional[_Iterable[str]] = ..., max_spread_points: _Optional[int] = ..., max_lot: _Optional[float] = ..., max_deviation_points: _Optional[int] = ...) -> None: ...

class TradingPreferences(_message.Message):
    __slots__ = ("preferred_lot_size", "max_open_positions", "auto_close_friday", "conservative_mode", "sizing_mode", "sizing_value")
    PREFERRED_LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    AUTO_CLOSE_FRIDAY_FIELD_NUMBER: _ClassVar[int]
    CONSERVATIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    SIZING_MODE_FIELD_NUMBER: _ClassVar[int]
    SIZING_VALUE_FIELD_NUMBER: _ClassVar[int]
    preferred_lot_size: float
    max_open_positions: int
    auto_close_friday: bool
    conservative_mode: bool
    sizing_mode: SizingMode
    sizing_value: float
    def __init__(self, preferred_lot_size: _Optional[float] = ..., max_open_positions: _Optional[int] = ..., auto_close_friday: _Optional[bool] = ..., conservative_mode: _Optional[bool] = ..., sizing_mode: _Optional[_Union[SizingMode, str]] = ..., sizing_value: _Optional[float] = ...) -> None: ...
