import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscriptionTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_TIER_UNSPECIFIED: _ClassVar[SubscriptionTier]
    SUBSCRIPTION_TIER_FREE: _ClassVar[SubscriptionTier]
    SUBSCRIPTION_TIER_PRO: _ClassVar[SubscriptionTier]
    SUBSCRIPTION_TIER_ENTERPRISE: _ClassVar[SubscriptionTier]
    SUBSCRIPTION_TIER_CUSTOM: _ClassVar[SubscriptionTier]

class AccountType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_TYPE_UNSPECIFIED: _ClassVar[AccountType]
    ACCOUNT_TYPE_DEMO: _ClassVar[AccountType]
    ACCOUNT_TYPE_LIVE: _ClassVar[AccountType]
    ACCOUNT_TYPE_CONTEST: _ClassVar[AccountType]
SUBSCRIPTION_TIER_UNSPECIFIED: SubscriptionTier
SUBSCRIPTION_TIER_FREE: SubscriptionTier
SUBSCRIPTION_TIER_PRO: SubscriptionTier
SUBSCRIPTION_TIER_ENTERPRISE: SubscriptionTier
SUBSCRIPTION_TIER_CUSTOM: SubscriptionTier
ACCOUNT_TYPE_UNSPECIFIED: AccountType
ACCOUNT_TYPE_DEMO: AccountType
ACCOUNT_TYPE_LIVE: AccountType
ACCOUNT_TYPE_CONTEST: AccountType

class UserContext(_message.Message):
    __slots__ = ("user_id", "tenant_id", "session_id", "roles", "permissions")
    class PermissionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    tenant_id: str
    session_id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    permissions: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., session_id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., permissions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BaseMessage(_message.Message):
    __slots__ = ("tenant_id", "timestamp", "correlation_id", "source_service", "message_version")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    timestamp: _timestamp_pb2.Timestamp
    correlation_id: str
    source_service: str
    message_version: str
    def __init__(self, tenant_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., source_service: _Optional[str] = ..., message_version: _Optional[str] = ...) -> None: ...

class MarketSession(_message.Message):
    __slots__ = ("is_open", "in_rollover", "active_sessions", "next_open", "next_close")
    IS_OPEN_FIELD_NUMBER: _ClassVar[int]
    IN_ROLLOVER_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OPEN_FIELD_NUMBER: _ClassVar[int]
    NEXT_CLOSE_FIELD_NUMBER: _ClassVar[int]
    is_open: bool
    in_rollover: bool
    active_sessions: _containers.RepeatedScalarFieldContainer[str]
    next_open: int
    next_close: int
    def __init__(self, is_open: _Optional[bool] = ..., in_rollover: _Optional[bool] = ..., active_sessions: _Optional[_Iterable[str]] = ..., next_open: _Optional[int] = ..., next_close: _Optional[int] = ...) -> None: ...
