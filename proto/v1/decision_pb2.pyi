from mt5fleet.proto.v1 import account_pb2 as _account_pb2
from mt5fleet.proto.v1 import commands_pb2 as _commands_pb2
from mt5fleet.proto.v1 import common_pb2 as _common_pb2
from mt5fleet.proto.v1 import prices_pb2 as _prices_pb2
from mt5fleet.proto.v1 import signals_pb2 as _signals_pb2
from mt5fleet.proto.v1 import symbols_pb2 as _symbols_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionRecord(_message.Message):
    __slots__ = ("signal_id", "user_id", "decided_at", "command_ttl_ms", "worker_version", "worker_replica", "signal", "policy", "quotes", "specs", "account", "stopped_out", "positions", "quote_age_ms", "spec_version", "news", "commands", "skip_reason", "skip_detail", "notes", "sizing")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    WORKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    STOPPED_OUT_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    QUOTE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEWS_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    SKIP_DETAIL_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SIZING_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    user_id: str
    decided_at: int
    command_ttl_ms: int
    worker_version: str
    worker_replica: str
    signal: _signals_pb2.UniversalSignal
    policy: DecisionPolicy
    quotes: _containers.RepeatedCompositeFieldContainer[_prices_pb2.ClientPrice]
    specs: _containers.RepeatedCompositeFieldContainer[_symbols_pb2.SymbolSpec]
    account: _account_pb2.AccountProfile
    stopped_out: bool
    positions: _containers.RepeatedCompositeFieldContainer[DecisionPosition]
    quote_age_ms: int
    spec_version: str
    news: DecisionNews
    commands: _containers.RepeatedCompositeFieldContainer[_commands_pb2.TradingCommand]
    skip_reason: str
    skip_detail: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    sizing: DecisionSizing
    def __init__(self, signal_id: _Optional[str] = ..., user_id: _Optional[str] = ..., decided_at: _Optional[int] = ..., command_ttl_ms: _Optional[int] = ..., worker_version: _Optional[str] = ..., worker_replica: _Optional[str] = ..., signal: _Optional[_Union[_signals_pb2.UniversalSignal, _Mapping]] = ..., policy: _Optional[_Union[DecisionPolicy, _Mapping]] = ..., quotes: _Optional[_Iterable[_Union[_prices_pb2.ClientPrice, _Mapping]]] = ..., specs: _Optional[_Iterable[_Union[_symbols_pb2.SymbolSpec, _Mapping]]] = ..., account: _Optional[_Union[_account_pb2.AccountProfile, _Mapping]] = ..., stopped_out: _Optional[bool] = ..., positions: _Optional[_Iterable[_Union[DecisionPosition, _Mapping]]] = ..., quote_age_ms: _Optional[int] = ..., spec_version: _Optional[str] = ..., news: _Optional[_Union[DecisionNews, _Mapping]] = ..., commands: _Optional[_Iterable[_Union[_commands_pb2.TradingCommand, _Mapping]]] = ..., skip_reason: _Optional[str] = ..., skip_detail: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ..., sizing: _Optional[_Union[DecisionSizing, _Mapping]] = ...) -> None: ...

class DecisionPolicy(_message.Message):
    __slots__ = ("tier", "tier_name", "trading_symbols", "allowed_symbols", "paused", "close_only", "max_spread_points", "max_quote_age_ms", "max_signal_age_ms", "sizing_mode", "sizing_value", "preferred_lot_size", "max_risk_per_trade_pct", "max_lot", "conservative_mode", "max_deviation_points", "allow_news_trading")
    TIER_FIELD_NUMBER: _ClassVar[int]
    TIER_NAME_FIELD_NUMBER: _ClassVar[int]
    TRADING_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CLOSE_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_SPREAD_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUOTE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIGNAL_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SIZING_MODE_FIELD_NUMBER: _ClassVar[int]
    SIZING_VALUE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_RISK_PER_TRADE_PCT_FIELD_NUMBER: _ClassVar[int]
    MAX_LOT_FIELD_NUMBER: _ClassVar[int]
    CONSERVATIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVIATION_POINTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEWS_TRADING_FIELD_NUMBER: _ClassVar[int]
    tier: _common_pb2.SubscriptionTier
    tier_name: str
    trading_symbols: _containers.RepeatedScalarFieldContainer[str]
    allowed_symbols: _containers.RepeatedScalarFieldContainer[str]
    paused: bool
    close_only: bool
    max_spread_points: float
    max_quote_age_ms: int
    max_signal_age_ms: int
    sizing_mode: _account_pb2.SizingMode
    sizing_value: float
    preferred_lot_size: float
    max_risk_per_trade_pct: float
    max_lot: float
    conservative_mode: bool
    max_deviation_points: int
    allow_news_trading: bool
    def __init__(self, tier: _Optional[_Union[_common_pb2.SubscriptionTier, str]] = ..., tier_name: _Optional[str] = ..., trading_symbols: _Optional[_Iterable[str]] = ..., allowed_symbols: _Optional[_Iterable[str]] = ..., paused: _Optional[bool] = ..., close_only: _Optional[bool] = ..., max_spread_points: _Optional[float] = ..., max_quote_age_ms: _Optional[int] = ..., max_signal_age_ms: _Optional[int] = ..., sizing_mode: _Optional[_Union[_account_pb2.SizingMode, str]] = ..., sizing_value: _Optional[float] = ..., preferred_lot_size: _Optional[float] = ..., max_risk_per_trade_pct: _Optional[float] = ..., max_lot: _Optional[float] = ..., conservative_mode: _Optional[bool] = ..., max_deviation_points: _Optional[int] = ..., allow_news_trading: _Optional[bool] = ...) -> None: ...

class DecisionNews(_message.Message):
    __slots__ = ("before_ms", "after_ms", "events")
    BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    before_ms: int
    after_ms: int
    events: _containers.RepeatedCompositeFieldContainer[DecisionNewsEvent]
    def __init__(self, before_ms: _Optional[int] = ..., after_ms: _Optional[int] = ..., events: _Optional[_Iterable[_Union[DecisionNewsEvent, _Mapping]]] = ...) -> None: ...

class DecisionNewsEvent(_message.Message):
    __slots__ = ("at", "currency", "impact", "title")
    AT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    IMPACT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    at: int
    currency: str
    impact: str
    title: str
    def __init__(self, at: _Optional[int] = ..., currency: _Optional[str] = ..., impact: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class DecisionPosition(_message.Message):
    __slots__ = ("signal_id", "opened_by", "ticket", "volume", "volume_known")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    OPENED_BY_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_KNOWN_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    opened_by: str
    ticket: int
    volume: float
    volume_known: bool
    def __init__(self, signal_id: _Optional[str] = ..., opened_by: _Optional[str] = ..., ticket: _Optional[int] = ..., volume: _Optional[float] = ..., volume_known: _Optional[bool] = ...) -> None: ...

class DecisionSizing(_message.Message):
    __slots__ = ("mode", "symbol", "account_currency", "equity", "balance", "account_time", "risk_pct", "risk_limit", "budget", "headroom", "entry", "stop_loss", "move_allowance", "tick_size", "tick_value", "tick_value_source", "lots_per_thousand_usd", "money_usd", "preferred_lot", "conversions", "conservative", "raw_lots", "lots")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_TIME_FIELD_NUMBER: _ClassVar[int]
    RISK_PCT_FIELD_NUMBER: _ClassVar[int]
    RISK_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    MOVE_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUE_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOTS_PER_THOUSAND_USD_FIELD_NUMBER: _ClassVar[int]
    MONEY_USD_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_LOT_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    CONSERVATIVE_FIELD_NUMBER: _ClassVar[int]
    RAW_LOTS_FIELD_NUMBER: _ClassVar[int]
    LOTS_FIELD_NUMBER: _ClassVar[int]
    mode: _account_pb2.SizingMode
    symbol: str
    account_currency: str
    equity: float
    balance: float
    account_time: int
    risk_pct: float
    risk_limit: float
    budget: float
    headroom: float
    entry: float
    stop_loss: float
    move_allowance: float
    tick_size: float
    tick_value: float
    tick_value_source: str
    lots_per_thousand_usd: float
    money_usd: float
    preferred_lot: float
    conversions: _containers.RepeatedCompositeFieldContainer[DecisionRate]
    conservative: bool
    raw_lots: float
    lots: float
    def __init__(self, mode: _Optional[_Union[_account_pb2.SizingMode, str]] = ..., symbol: _Optional[str] = ..., account_currency: _Optional[str] = ..., equity: _Optional[float] = ..., balance: _Optional[float] = ..., account_time: _Optional[int] = ..., risk_pct: _Optional[float] = ..., risk_limit: _Optional[float] = ..., budget: _Optional[float] = ..., headroom: _Optional[float] = ..., entry: _Optional[float] = ..., stop_loss: _Optional[float] = ..., move_allowance: _Optional[float] = ..., tick_size: _Optional[float] = ..., tick_value: _Optional[float] = ..., tick_value_source: _Optional[str] = ..., lots_per_thousand_usd: _Optional[float] = ..., money_usd: _Optional[float] = ..., preferred_lot: _Optional[float] = ..., conversions: _Optional[_Iterable[_Union[DecisionRate, _Mapping]]] = ..., conservative: _Optional[bool] = ..., raw_lots: _Optional[float] = ..., lots: _Optional[float] = ...) -> None: ...

class DecisionRate(_message.Message):
    __slots__ = ("source", "target", "value", "how", "pair", "side", "quote_time")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HOW_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_TIME_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    value: float
    how: str
    pair: str
    side: str
    quote_time: int
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., value: _Optional[float] = ..., how: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[str] = ..., quote_time: _Optional[int] = ...) -> None: ...
