"""The typed claims of the three NATS JWT kinds (operator, account, user) and the
limits and permissions they carry, as nats-io/jwt v2 names them."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mt5fleet.operator.core.nats_exports import ActivationClaims, Export, Import, check_exports, check_imports
from mt5fleet.operator.core.nats_keys import KeyKind, require_kind

# NATS spells "unlimited" -1; 0 usually means "none" (for JetStream: disabled).
NO_LIMIT = -1


@dataclass(frozen=True)
class Permission:
    """Subjects allowed and denied; an empty ``allow`` with an empty ``deny`` allows all."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserPermissions:
    pub: Permission = Permission()
    sub: Permission = Permission()


@dataclass(frozen=True)
class NatsLimits:
    """Per-connection limits in bytes / counts; -1 is unlimited."""

    payload: int = NO_LIMIT
    subs: int = NO_LIMIT
    data: int = NO_LIMIT


@dataclass(frozen=True)
class UserClaims:
    """``subject`` is the user's public key; ``issuer_account`` the account it belongs to
    (written into the JWT only when a signing key, not the account key, signs it)."""

    subject: str
    name: str
    issuer_account: str
    permissions: UserPermissions = UserPermissions()
    limits: NatsLimits = NatsLimits()
    bearer_token: bool = False
    expires: int = 0  # unix seconds; 0: never


@dataclass(frozen=True)
class JetStreamLimits:
    """Account-wide JetStream limits: storage 0 means JetStream is disabled."""

    mem_storage: int = 0
    disk_storage: int = 0
    streams: int = 0
    consumer: int = 0
    max_ack_pending: int = 0
    mem_max_stream_bytes: int = 0
    disk_max_stream_bytes: int = 0
    max_bytes_required: bool = False

    @classmethod
    def unlimited(cls) -> JetStreamLimits:
        return cls(mem_storage=NO_LIMIT, disk_storage=NO_LIMIT, streams=NO_LIMIT, consumer=NO_LIMIT)

    @property
    def enabled(self) -> bool:
        return self.mem_storage != 0 or self.disk_storage != 0


@dataclass(frozen=True)
class AccountLimits:
    subs: int = NO_LIMIT
    data: int = NO_LIMIT
    payload: int = NO_LIMIT
    imports: int = NO_LIMIT
    exports: int = NO_LIMIT
    wildcards: bool = True
    conn: int = NO_LIMIT
    leaf: int = NO_LIMIT
    disallow_bearer: bool = False
    jetstream: JetStreamLimits = JetStreamLimits()


@dataclass(frozen=True)
class AccountClaims:
    """``revocations`` maps a user public key (or ``*``) to unix seconds: the server
    refuses every JWT of that key issued at or before that second. ``exports`` and
    ``imports`` are the account's only ways to or from other accounts (``nats_exports``)."""

    subject: str
    name: str
    limits: AccountLimits = AccountLimits()
    signing_keys: tuple[str, ...] = ()
    revocations: Mapping[str, int] = field(default_factory=dict)
    exports: tuple[Export, ...] = ()
    imports: tuple[Import, ...] = ()

    def __post_init__(self) -> None:
        # Frozen all the way down: a read-only copy, so a shared dict cannot change it.
        object.__setattr__(self, "revocations", types.MappingProxyType(dict(self.revocations)))
        object.__setattr__(self, "exports", tuple(self.exports))
        object.__setattr__(self, "imports", tuple(self.imports))
        # What jwt's validation would reject, the server would ignore: refuse it here.
        check_exports(self.exports)
        check_imports(self.imports)

    def with_revocation(self, public_key: str, at: int) -> AccountClaims:
        """A later revocation of the same key wins; an earlier one changes nothing."""
        if public_key != "*":
            require_kind(public_key, KeyKind.USER, "revoked key")
        revocations = dict(self.revocations)
        revocations[public_key] = max(at, revocations.get(public_key, at))
        return dataclasses.replace(self, revocations=revocations)

    def is_revoked(self, public_key: str, issued_at: int) -> bool:
        """As the server decides: revoked if a revocation at or after ``issued_at`` exists."""
        return any(key in self.revocations and self.revocations[key] >= issued_at for key in ("*", public_key))


@dataclass(frozen=True)
class OperatorClaims:
    subject: str
    name: str
    signing_keys: tuple[str, ...] = ()
    system_account: str = ""
    account_server_url: str = ""
    strict_signing_key_usage: bool = False


Claims = TypeVar("Claims", UserClaims, AccountClaims, OperatorClaims, ActivationClaims)


@dataclass(frozen=True)
class Decoded(Generic[Claims]):
    """A verified token: the typed claims and the registered JWT fields around them."""

    claims: Claims
    issuer: str
    issued_at: int
    jti: str
    raw: Mapping[str, Any]

