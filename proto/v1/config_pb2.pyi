from mt5fleet.proto.v1 import account_pb2 as _account_pb2
from mt5fleet.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientConfig(_message.Message):
    __slots__ = ("user_id", "tier_name", "tier", "trading_symbols", "correlation_symbols", "monitoring_symbols", "symbol_map", "limits", "risk", "preferences", "paused", "close_only", "max_quote_age_ms", "max_signal_age_ms", "mt5_credentials", "worker_shard", "generation", "updated_at", "broker_name", "broker_server", "account_type")
    class SymbolMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TRADING_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    MONITORING_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_MAP_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CLOSE_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_QUOTE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIGNAL_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    MT5_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SHARD_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    BROKER_NAME_FIELD_NUMBER: _ClassVar[int]
    BROKER_SERVER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    tier_name: str
    tier: _common_pb2.SubscriptionTier
    trading_symbols: _containers.RepeatedScalarFieldContainer[str]
    correlation_symbols: _containers.RepeatedScalarFieldContainer[str]
    monitoring_symbols: _containers.RepeatedScalarFieldContainer[str]
    symbol_map: _containers.ScalarMap[str, str]
    limits: TierLimits
    risk: _account_pb2.RiskProfile
    preferences: _account_pb2.TradingPreferences
    paused: bool
    close_only: bool
    max_quote_age_ms: int
    max_signal_age_ms: int
    mt5_credentials: EncryptedCredentials
    worker_shard: int
    generation: int
    updated_at: int
    broker_name: str
    broker_server: str
    account_type: _common_pb2.AccountType
    def __init__(self, user_id: _Optional[str] = ..., tier_name: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.SubscriptionTier, str]] = ..., trading_symbols: _Optional[_Iterable[str]] = ..., correlation_symbols: _Optional[_Iterable[str]] = ..., monitoring_symbols: _Optional[_Iterable[str]] = ..., symbol_map: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[TierLimits, _Mapping]] = ..., risk: _Optional[_Union[_account_pb2.RiskProfile, _Mapping]] = ..., preferences: _Optional[_Union[_account_pb2.TradingPreferences, _Mapping]] = ..., paused: _Optional[bool] = ..., close_only: _Optional[bool] = ..., max_quote_age_ms: _Optional[int] = ..., max_signal_age_ms: _Optional[int] = ..., mt5_credentials: _Optional[_Union[EncryptedCredentials, _Mapping]] = ..., worker_shard: _Optional[int] = ..., generation: _Optional[int] = ..., updated_at: _Optional[int] = ..., broker_name: _Optional[str] = ..., broker_server: _Optional[str] = ..., account_type: _Optional[_Union[_common_pb2.AccountType, str]] = ...) -> None: ...

class TierLimits(_message.Message):
    __slots__ = ("max_trading_pairs", "max_monitoring_pairs", "correlation_analysis", "custom_pairs", "max_payload_bytes", "max_subscriptions", "max_data_bytes", "max_price_batches_per_s")
    MAX_TRADING_PAIRS_FIELD_NUMBER: _ClassVar[int]
    MAX_MONITORING_PAIRS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PAIRS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_BATCHES_PER_S_FIELD_NUMBER: _ClassVar[int]
    max_trading_pairs: int
    max_monitoring_pairs: int
    correlation_analysis: bool
    custom_pairs: bool
    max_payload_bytes: int
    max_subscriptions: int
    max_data_bytes: int
    max_price_batches_per_s: int
    def __init__(self, max_trading_pairs: _Optional[int] = ..., max_monitoring_pairs: _Optional[int] = ..., correlation_analysis: _Optional[bool] = ..., custom_pairs: _Optional[bool] = ..., max_payload_bytes: _Optional[int] = ..., max_subscriptions: _Optional[int] = ..., max_data_bytes: _Optional[int] = ..., max_price_batches_per_s: _Optional[int] = ...) -> None: ...

class EncryptedCredentials(_message.Message):
    __slots__ = ("login", "server", "nonce", "ciphertext", "key_id", "algorithm")
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    login: int
    server: str
    nonce: bytes
    ciphertext: bytes
    key_id: str
    algorithm: str
    def __init__(self, login: _Optional[int] = ..., server: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., key_id: _Optional[str] = ..., algorithm: _Optional[str] = ...) -> None: ...
