"""One NATS account per tenant (SPEC §7, issue 10): the platform account's exports and one
tenant's account claims.

Why accounts and not permissions: NATS does not check a publish's reply subject, so inside
one shared account a tenant can aim the server's own answers at the JetStream API, the KV
bucket or another tenant's subjects. Across accounts, a reply travels back only through the
response import the server made for that request, into the requester's own account.

The platform account owns every stream and bucket and exports, once for the whole fleet,
wildcards that require an activation token (``token_req``). A tenant's account has no
JetStream and imports only its own literal subjects; each import carries a token the
platform signed for exactly that subject and that tenant account, so a tenant that edits
its imports (it cannot: the operator signs its account) would still get nothing else.

The signal producer (a signal engine) is an account of its own the same way: it imports
only ``signals.*``, a token-required service the platform exports, so its JetStream
publishes land in the platform's SIGNALS stream with a PubAck, and nothing else of the
platform's is in its reach.

Pure: keys and the issue time come in; nothing is sent anywhere (that is the adapters').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from mt5fleet.operator.core.nats_claims import (
    NO_LIMIT,
    AccountClaims,
    AccountLimits,
    JetStreamLimits,
    Permission,
    UserPermissions,
)
from mt5fleet.operator.core.nats_exports import (
    NANOS_PER_SECOND,
    ActivationClaims,
    Export,
    ExportType,
    Import,
    ResponseType,
)
from mt5fleet.operator.core.nats_jwt import encode_activation
from mt5fleet.operator.core.nats_keys import JwtError, KeyKind, NKey, require_kind
from mt5fleet.operator.core.tiers import Tier
from mt5fleet.proto import subjects
from mt5fleet.proto.subjects import Channel

# Requests a tenant makes into the platform: its five publishes and its catch-up request.
SERVICE_CHANNELS: tuple[Channel, ...] = tuple(channel for channel in Channel if channel.from_agent)
# The server forgets an unanswered request's response mapping after this, so requests
# nobody answers cannot pile up; the slowest answer a tenant waits for is a catch-up page
# (the agent gives up after 3 s), a PubAck comes in milliseconds.
RESPONSE_THRESHOLD_NS = 10 * NANOS_PER_SECOND
# The agent's connection, plus its replacement while the old one is still being closed.
TENANT_CONNECTIONS = 2
# The signal producer's account and its first user (``mt5fleet nats trust-chain --creds-dir``
# writes it as signals.creds); a signal is a few hundred bytes.
PRODUCER_ACCOUNT = "SIGNAL-PRODUCER"
PRODUCER_USER = "signals"
PRODUCER_PAYLOAD = 64 * 1024


def market_data_wildcard() -> str:
    return f"{subjects.MARKET_DATA_PREFIX}.*"


def config_wildcard() -> str:
    """``$KV.tc-config.*``: every user's config key, as the KV bucket publishes it."""
    return f"$KV.{subjects.CONFIG_BUCKET}.*"


def config_direct_get_subject(user_id: str) -> str:
    """The one JetStream call a tenant makes: a direct get of its own config key (the agent
    reads its config by it on every (re)connect). A tenant account has no JetStream, so this
    is a service import into the platform's; the server answers it with that key's last
    message only, and its answer, like a PubAck, returns through the response import."""
    return f"$JS.API.DIRECT.GET.{subjects.config_stream_name()}.{subjects.config_key_subject(user_id)}"


def calendar_direct_get_subject() -> str:
    """The calendar's one key by direct get: what an agent reads on every (re)connect; the
    same for every tenant, read-only (a direct get changes nothing)."""
    return f"$JS.API.DIRECT.GET.{subjects.calendar_stream_name()}.{subjects.calendar_key_subject()}"


def signal_wildcard() -> str:
    """``signals.*``: what a producer publishes on, the SIGNALS stream's subjects."""
    return f"{subjects.SIGNALS_PREFIX}.*"


def config_direct_get_wildcard() -> str:
    return f"$JS.API.DIRECT.GET.{subjects.config_stream_name()}.{config_wildcard()}"


def platform_exports(*, response_threshold_ns: int = RESPONSE_THRESHOLD_NS) -> tuple[Export, ...]:
    """The platform's exports, one definition for the whole fleet: every one needs a token."""
    services = tuple(
        Export(name=f"{subjects.USER_PREFIX}-{channel.value}", subject=subjects.user_wildcard(channel),
               type=ExportType.SERVICE, token_req=True, response_type=ResponseType.SINGLETON,
               response_threshold_ns=response_threshold_ns)
        for channel in SERVICE_CHANNELS)
    direct_get = Export(name=f"{subjects.CONFIG_BUCKET}-get", subject=config_direct_get_wildcard(),
                        type=ExportType.SERVICE, token_req=True, response_type=ResponseType.SINGLETON,
                        response_threshold_ns=response_threshold_ns)
    # The producer's publishes, answered by the SIGNALS stream's PubAck.
    signals = Export(name=subjects.SIGNALS_PREFIX, subject=signal_wildcard(), type=ExportType.SERVICE,
                     token_req=True, response_type=ResponseType.SINGLETON, response_threshold_ns=response_threshold_ns)
    streams = (
        Export(name=f"{subjects.USER_PREFIX}-{Channel.COMMANDS.value}",
               subject=subjects.user_wildcard(Channel.COMMANDS), type=ExportType.STREAM, token_req=True),
        Export(name=subjects.MARKET_DATA_PREFIX, subject=market_data_wildcard(), type=ExportType.STREAM,
               token_req=True),
        Export(name=subjects.CONFIG_BUCKET, subject=config_wildcard(), type=ExportType.STREAM, token_req=True),
    )
    # The calendar, read-only: its puts (a stream) and the direct get of its one key.
    calendar = (
        Export(name=f"{subjects.CALENDAR_BUCKET}-get", subject=calendar_direct_get_subject(), type=ExportType.SERVICE,
               token_req=True, response_type=ResponseType.SINGLETON, response_threshold_ns=response_threshold_ns),
        Export(name=subjects.CALENDAR_BUCKET, subject=subjects.calendar_key_subject(), type=ExportType.STREAM,
               token_req=True),
    )
    return (*services, direct_get, signals, *streams, *calendar)


def platform_account(claims: AccountClaims, *, response_threshold_ns: int = RESPONSE_THRESHOLD_NS) -> AccountClaims:
    """The platform account as it is, with the fleet's exports (JetStream stays as set)."""
    return dataclasses.replace(claims, exports=platform_exports(response_threshold_ns=response_threshold_ns))


@dataclass(frozen=True)
class TenantLimits:
    """A tier's NATS limits, applied to the tenant's whole account (-1: unlimited)."""

    conn: int
    subs: int
    payload: int
    data: int

    @classmethod
    def of_tier(cls, tier: Tier, *, conn: int = TENANT_CONNECTIONS) -> TenantLimits:
        return cls(conn=conn, subs=tier.max_subscriptions, payload=tier.max_payload_bytes,
                   data=tier.max_data_bytes)

    def account_limits(self) -> AccountLimits:
        """No JetStream, no leaf nodes, no exports, no bearer tokens: a tenant only imports."""
        return AccountLimits(conn=self.conn, subs=self.subs, payload=self.payload, data=self.data,
                             imports=NO_LIMIT, exports=0, wildcards=False, leaf=0, disallow_bearer=True,
                             jetstream=JetStreamLimits())


@dataclass(frozen=True)
class Platform:
    """The platform account's public key and the key that signs its activation tokens (the
    account key or one of its signing keys)."""

    account: str
    signer: NKey = field(repr=False)

    def __post_init__(self) -> None:
        require_kind(self.account, KeyKind.ACCOUNT, "platform account")
        if self.signer.kind is not KeyKind.ACCOUNT:
            raise JwtError("activation tokens are signed by the platform account or one of its signing keys")


def _imported(subject: str, kind: ExportType, *, importer: str, platform: Platform, issued_at: int) -> Import:
    """One import with its own token: for exactly that subject and that importing account."""
    activation = ActivationClaims(subject=importer, name=subject, import_subject=subject, kind=kind,
                                  issuer_account=platform.account)
    token = encode_activation(activation, platform.signer, issued_at=issued_at)
    return Import(name=subject, subject=subject, account=platform.account, type=kind, token=token)


def tenant_requests(user_id: str) -> tuple[str, ...]:
    """Every subject a tenant sends requests on: each must join the reply-subject attacks."""
    return (*(subjects.user_subject(user_id, channel) for channel in SERVICE_CHANNELS),
            config_direct_get_subject(user_id), calendar_direct_get_subject())


def tenant_subjects(user_id: str, symbols: Iterable[str]) -> tuple[tuple[str, ExportType], ...]:
    """What the tenant imports: its requests (services), then what it reads (streams)."""
    requests = tuple((subject, ExportType.SERVICE) for subject in tenant_requests(user_id))
    reads = (subjects.user_subject(user_id, Channel.COMMANDS), subjects.config_key_subject(user_id),
             subjects.calendar_key_subject(),
             *(subjects.market_data_subject(symbol) for symbol in sorted(set(symbols))))
    return requests + tuple((subject, ExportType.STREAM) for subject in reads)


def tenant_imports(user_id: str, symbols: Iterable[str], *, tenant: str, platform: Platform,
                   issued_at: int) -> tuple[Import, ...]:
    """Each import with its own token: for exactly that subject and this tenant account."""
    require_kind(tenant, KeyKind.ACCOUNT, "tenant account")
    return tuple(_imported(subject, kind, importer=tenant, platform=platform, issued_at=issued_at)
                 for subject, kind in tenant_subjects(user_id, symbols))


def tenant_account(user_id: str, symbols: Iterable[str], limits: TenantLimits, *, tenant: str,
                   platform: Platform, issued_at: int, signing_keys: tuple[str, ...] = ()) -> AccountClaims:
    """One tenant's account claims, named by its user id; sign with the operator's key."""
    return AccountClaims(subject=tenant, name=subjects.check_user_id(user_id), limits=limits.account_limits(),
                         signing_keys=signing_keys,
                         imports=tenant_imports(user_id, symbols, tenant=tenant, platform=platform,
                                                issued_at=issued_at))


# --------------------------------------------------------------------------- the signal producer

def producer_limits(*, conn: int = NO_LIMIT, payload: int = PRODUCER_PAYLOAD) -> AccountLimits:
    """No JetStream, no leaf nodes, no exports, no bearer tokens: a producer only imports."""
    return AccountLimits(conn=conn, subs=NO_LIMIT, payload=payload, data=NO_LIMIT, imports=NO_LIMIT, exports=0,
                         wildcards=False, leaf=0, disallow_bearer=True, jetstream=JetStreamLimits())


def producer_imports(*, producer: str, platform: Platform, issued_at: int) -> tuple[Import, ...]:
    """``signals.*`` as a service import, with a token for exactly that and this account. Its
    PubAcks come back through the server's response import: nothing else is imported."""
    require_kind(producer, KeyKind.ACCOUNT, "producer account")
    return (_imported(signal_wildcard(), ExportType.SERVICE, importer=producer, platform=platform,
                      issued_at=issued_at),)


def producer_account(*, producer: str, platform: Platform, issued_at: int, signing_keys: tuple[str, ...] = (),
                     limits: AccountLimits | None = None, name: str = PRODUCER_ACCOUNT) -> AccountClaims:
    """The signal producer's account claims; sign with the operator's key."""
    return AccountClaims(subject=producer, name=name, limits=limits or producer_limits(), signing_keys=signing_keys,
                         imports=producer_imports(producer=producer, platform=platform, issued_at=issued_at))


def producer_inbox_prefix(name: str = PRODUCER_USER) -> str:
    """A producer connects with ``inbox_prefix=_INBOX_<name>``: its PubAcks arrive there."""
    return subjects.inbox_prefix(name)


def producer_permissions(name: str = PRODUCER_USER) -> UserPermissions:
    """Defence in depth inside the producer's account: publish ``signals.>`` only, subscribe
    to its own inbox only (the account boundary is the guarantee)."""
    return UserPermissions(pub=Permission(allow=(f"{subjects.SIGNALS_PREFIX}.>",)),
                           sub=Permission(allow=(f"{producer_inbox_prefix(name)}.>",)))


WORKER_USER = "worker"


def worker_permissions() -> UserPermissions:
    """The workers' user in the platform account: everything they do (read every stream,
    publish commands, decision records, market data, create their consumers and the
    streams and buckets they own) but nothing that destroys or forges what others own.
    A compromised worker cannot purge or delete a stream or a stored message (the
    400-day audit trail), rewrite a user's config, or publish as an agent or a signal
    engine. The operator and ``nats bootstrap`` keep the full-access ``service`` user."""
    destroy = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>",
               "$JS.API.ACCOUNT.PURGE.>")
    forge = (f"$KV.{subjects.CONFIG_BUCKET}.>", f"{subjects.SIGNALS_PREFIX}.>",
             *(subjects.user_wildcard(channel) for channel in Channel if channel.from_agent))
    return UserPermissions(pub=Permission(deny=(*destroy, *forge)))


__all__ = [
    "WORKER_USER", "worker_permissions",
    "PRODUCER_ACCOUNT", "PRODUCER_PAYLOAD", "PRODUCER_USER", "RESPONSE_THRESHOLD_NS", "SERVICE_CHANNELS",
    "TENANT_CONNECTIONS", "Platform", "TenantLimits", "calendar_direct_get_subject",
    "config_direct_get_subject", "config_direct_get_wildcard",
    "config_wildcard", "market_data_wildcard", "platform_account", "platform_exports", "producer_account",
    "producer_imports", "producer_inbox_prefix", "producer_limits", "producer_permissions", "signal_wildcard",
    "tenant_account", "tenant_imports", "tenant_requests", "tenant_subjects",
]
