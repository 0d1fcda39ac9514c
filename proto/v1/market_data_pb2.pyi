from mt5fleet.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MarketDataStream(_message.Message):
    __slots__ = ("ticks", "bars", "depth", "source", "batch_sequence", "batch_time", "batch_time_msc", "tenant_id")
    TICKS_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIME_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIME_MSC_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ticks: _containers.RepeatedCompositeFieldContainer[TickData]
    bars: _containers.RepeatedCompositeFieldContainer[OHLCVBar]
    depth: MarketDepth
    source: str
    batch_sequence: int
    batch_time: int
    batch_time_msc: int
    tenant_id: str
    def __init__(self, ticks: _Optional[_Iterable[_Union[TickData, _Mapping]]] = ..., bars: _Optional[_Iterable[_Union[OHLCVBar, _Mapping]]] = ..., depth: _Optional[_Union[MarketDepth, _Mapping]] = ..., source: _Optional[str] = ..., batch_sequence: _Optional[int] = ..., batch_time: _Optional[int] = ..., batch_time_msc: _Optional[int] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class TickData(_message.Message):
    __slots__ = ("symbol", "bid", "ask", "last", "volume", "time", "time_msc", "flags", "volume_real", "tenant_id", "sequence_number", "source", "spread")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_MSC_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    VOLUME_REAL_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bid: float
    ask: float
    last: float
    volume: int
    time: int
    time_msc: int
    flags: int
    volume_real: float
    tenant_id: str
    sequence_number: int
    source: str
    spread: float
    def __init__(self, symbol: _Optional[str] = ..., bid: _Optional[float] = ..., ask: _Optional[float] = ..., last: _Optional[float] = ..., volume: _Optional[int] = ..., time: _Optional[int] = ..., time_msc: _Optional[int] = ..., flags: _Optional[int] = ..., volume_real: _Optional[float] = ..., tenant_id: _Optional[str] = ..., sequence_number: _Optional[int] = ..., source: _Optional[str] = ..., spread: _Optional[float] = ...) -> None: ...

class OHLCVBar(_message.Message):
    __slots__ = ("symbol", "timeframe", "open_time", "open", "high", "low", "close", "tick_volume", "real_volume", "spread")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    TICK_VOLUME_FIELD_NUMBER: _ClassVar[int]
    REAL_VOLUME_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: int
    open_time: int
    open: float
    high: float
    low: float
    close: float
    tick_volume: int
    real_volume: float
    spread: float
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[int] = ..., open_time: _Optional[int] = ..., open: _Optional[float] = ..., high: _Optional[float] = ..., low: _Optional[float] = ..., close: _Optional[float] = ..., tick_volume: _Optional[int] = ..., real_volume: _Optional[float] = ..., spread: _Optional[float] = ...) -> None: ...

class MarketDepth(_message.Message):
    __slots__ = ("symbol", "timestamp", "bids", "asks")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timestamp: int
    bids: _containers.RepeatedCompositeFieldContainer[MarketDepthLevel]
    asks: _containers.RepeatedCompositeFieldContainer[MarketDepthLevel]
    def __init__(self, symbol: _Optional[str] = ..., timestamp: _Optional[int] = ..., bids: _Optional[_Iterable[_Union[MarketDepthLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[MarketDepthLevel, _Mapping]]] = ...) -> None: ...

class MarketDepthLevel(_message.Message):
    __slots__ = ("price", "volume")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    price: float
    volume: float
    def __init__(self, price: _Optional[float] = ..., volume: _Optional[float] = ...) -> None: ...

class SubscriptionRequest(_message.Message):
    __slots__ = ("symbol", "data_type", "user_id")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    data_type: str
    user_id: str
    def __init__(self, symbol: _Optional[str] = ..., data_type: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ClientMarketData(_message.Message):
    __slots__ = ("symbol", "bid", "ask", "timestamp", "user_tier", "indicators", "session", "correlations", "bar_time")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    USER_TIER_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATIONS_FIELD_NUMBER: _ClassVar[int]
    BAR_TIME_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bid: float
    ask: float
    timestamp: int
    user_tier: _common_pb2.SubscriptionTier
    indicators: TechnicalIndicators
    session: _common_pb2.MarketSession
    correlations: _containers.RepeatedCompositeFieldContainer[SymbolCorrelation]
    bar_time: int
    def __init__(self, symbol: _Optional[str] = ..., bid: _Optional[float] = ..., ask: _Optional[float] = ..., timestamp: _Optional[int] = ..., user_tier: _Optional[_Union[_common_pb2.SubscriptionTier, str]] = ..., indicators: _Optional[_Union[TechnicalIndicators, _Mapping]] = ..., session: _Optional[_Union[_common_pb2.MarketSession, _Mapping]] = ..., correlations: _Optional[_Iterable[_Union[SymbolCorrelation, _Mapping]]] = ..., bar_time: _Optional[int] = ...) -> None: ...

class TechnicalIndicators(_message.Message):
    __slots__ = ("sma_20", "sma_50", "ema_12", "ema_26", "macd_line", "macd_signal", "rsi", "bollinger_upper", "bollinger_middle", "bollinger_lower")
    SMA_20_FIELD_NUMBER: _ClassVar[int]
    SMA_50_FIELD_NUMBER: _ClassVar[int]
    EMA_12_FIELD_NUMBER: _ClassVar[int]
    EMA_26_FIELD_NUMBER: _ClassVar[int]
    MACD_LINE_FIELD_NUMBER: _ClassVar[int]
    MACD_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    RSI_FIELD_NUMBER: _ClassVar[int]
    BOLLINGER_UPPER_FIELD_NUMBER: _ClassVar[int]
    BOLLINGER_MIDDLE_FIELD_NUMBER: _ClassVar[int]
    BOLLINGER_LOWER_FIELD_NUMBER: _ClassVar[int]
    sma_20: float
    sma_50: float
    ema_12: float
    ema_26: float
    macd_line: float
    macd_signal: float
    rsi: float
    bollinger_upper: float
    bollinger_middle: float
    bollinger_lower: float
    def __init__(self, sma_20: _Optional[float] = ..., sma_50: _Optional[float] = ..., ema_12: _Optional[float] = ..., ema_26: _Optional[float] = ..., macd_line: _Optional[float] = ..., macd_signal: _Optional[float] = ..., rsi: _Optional[float] = ..., bollinger_upper: _Optional[float] = ..., bollinger_middle: _Optional[float] = ..., bollinger_lower: _Optional[float] = ...) -> None: ...

class SymbolCorrelation(_message.Message):
    __slots__ = ("symbol_a", "symbol_b", "coefficient", "window", "computed_at")
    SYMBOL_A_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_B_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    symbol_a: str
    symbol_b: str
    coefficient: float
    window: int
    computed_at: int
    def __init__(self, symbol_a: _Optional[str] = ..., symbol_b: _Optional[str] = ..., coefficient: _Optional[float] = ..., window: _Optional[int] = ..., computed_at: _Optional[int] = ...) -> None: ...

class CorrelationSnapshot(_message.Message):
    __slots__ = ("pairs", "computed_at")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[SymbolCorrelation]
    computed_at: int
    def __init__(self, pairs: _Optional[_Iterable[_Union[SymbolCorrelation, _Mapping]]] = ..., computed_at: _Optional[int] = ...) -> None: ...
