"""The fleet's NATS trust chain and the authority that issues and revokes user credentials.

Decentralised JWT auth (the NATS way): the server trusts one operator; the operator (via
a signing key) signs the system account, the platform account ``MT5FLEET`` (JetStream,
every stream and bucket, and the fleet's exports from its first JWT on: ``tenancy``) and
one account per tenant (``tenant_accounts``) and the signal producer's account
(``signal_producer``, imports ``signals.*`` only); the platform account's signing key signs a
full-access ``service`` user for the operator and bootstrap and a ``worker`` user for the
workers (``tenancy.worker_permissions``), the producer's its ``signals`` user. The server never sees a
password or a user list: it checks a user's JWT against the account JWT it holds, and the
account JWT carries the revocations. So revoking a user is "sign a new account JWT and
push it through the system account" (``$SYS.REQ.CLAIMS.UPDATE``).

Secrets: every seed (``NKey.seed``, ``IssuedUser.seed`` / ``creds_text``) stays out of
``repr`` and out of logs. :meth:`AccountAuthority.state_json` holds claims only; the
seeds are persisted separately (``TrustChain.to_json``) in a Kubernetes Secret or a 0600
file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mt5fleet.operator.core.nats_exports import export_from_json, export_json
from mt5fleet.operator.core.nats_jwt import (
    AccountClaims,
    AccountLimits,
    JetStreamLimits,
    KeyKind,
    NatsLimits,
    NKey,
    OperatorClaims,
    UserClaims,
    UserPermissions,
    decode_account,
    decode_operator,
    decode_user,
    encode_account,
    encode_operator,
    encode_user,
    format_creds,
)
from mt5fleet.operator.core.tenancy import (
    PRODUCER_USER,
    WORKER_USER,
    Platform,
    platform_account,
    producer_account,
    producer_permissions,
    worker_permissions,
)
from mt5fleet.proto.runtime.embedded_nats import OperatorMode

log = logging.getLogger("mt5fleet.operator.nats")

APP_ACCOUNT = "MT5FLEET"
SYSTEM_ACCOUNT = "SYS"
OPERATOR_NAME = "mt5fleet"
SERVICE_USER = "service"
SYSTEM_USER = "sys"
CLAIMS_UPDATE_SUBJECT = "$SYS.REQ.CLAIMS.UPDATE"
CLAIMS_LOOKUP_SUBJECT = "$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"
CLAIMS_LIST_SUBJECT = "$SYS.REQ.CLAIMS.LIST"
STATE_VERSION = 1

Clock = Callable[[], int]
UNLIMITED = NatsLimits()


def now_s() -> int:
    return int(time.time())


class ClaimsUpdateError(RuntimeError):
    """The server did not accept an account JWT (or nobody answered the update)."""


@dataclass(frozen=True)
class IssuedUser:
    """A user's credentials. ``seed`` and ``creds_text`` are secrets: not in ``repr``."""

    name: str
    public_key: str
    jwt: str = field(repr=False)
    seed: str = field(repr=False)
    creds_text: str = field(repr=False)
    issued_at: int = 0


# --------------------------------------------------------------------------- authority

class AccountAuthority:
    """Owns the app account's claims (revocations included), issues user credentials
    with the account signing key, and re-signs the account with the operator signing key.

    Pure apart from the clock: pushing to a server is :func:`push_account_jwt`."""

    def __init__(self, claims: AccountClaims, *, account_signer: NKey, operator_signer: NKey,
                 clock: Clock = now_s, last_issued_at: int = 0) -> None:
        if account_signer.public_key not in (claims.subject, *claims.signing_keys):
            raise ValueError("the account signer is neither the account key nor one of its signing keys")
        if operator_signer.kind is not KeyKind.OPERATOR:
            raise ValueError("the account JWT is signed by an operator key")
        self._claims = claims
        self._account_signer = account_signer
        self._operator_signer = operator_signer
        self._clock = clock
        self._last_issued_at = last_issued_at

    @property
    def claims(self) -> AccountClaims:
        return self._claims

    @property
    def account_public_key(self) -> str:
        return self._claims.subject

    def issue_user(self, user_id: str, permissions: UserPermissions, limits: NatsLimits = UNLIMITED,
                   *, expires: int = 0, key: NKey | None = None, not_before_iat: int = 0) -> IssuedUser:
        """A JWT for a fresh key pair, or for ``key`` (new permissions, same identity: the
        agent's seed stays, only its JWT changes). ``not_before_iat`` puts the issue time
        after an older JWT's, so revoking "issued up to then" spares this one."""
        key = key or NKey.create(KeyKind.USER)
        issued_at = max(self._clock(), not_before_iat)
        claims = UserClaims(subject=key.public_key, name=user_id, issuer_account=self.account_public_key,
                            permissions=permissions, limits=limits, expires=expires)
        token = encode_user(claims, self._account_signer, issued_at=issued_at)
        log.info("issued NATS credentials for %s (%s)", user_id, key.public_key)
        return IssuedUser(name=user_id, public_key=key.public_key, jwt=token, seed=key.seed,
                          creds_text=format_creds(token, key.seed), issued_at=issued_at)

    def revoke(self, public_key: str, at: int | None = None) -> AccountClaims:
        """Revoke every JWT of ``public_key`` issued at or before ``at`` (default: now).
        Takes effect once :meth:`account_jwt` is pushed."""
        self._claims = self._claims.with_revocation(public_key, self._clock() if at is None else at)
        log.info("revoked NATS user %s", public_key)
        return self._claims

    def forget_revocations_before(self, cutoff: int) -> AccountClaims:
        """Drop revocations older than ``cutoff``: safe once every JWT they cover has expired
        or been replaced, and it keeps the account JWT small."""
        kept = {key: at for key, at in self._claims.revocations.items() if at >= cutoff}
        self._claims = dataclasses.replace(self._claims, revocations=kept)
        return self._claims

    def account_jwt(self) -> str:
        """The current claims, signed. Each JWT is issued strictly after the previous one:
        JWT resolvers (and a cluster's servers syncing them) keep the newest by ``iat``,
        so two versions must never share a second."""
        self._last_issued_at = max(self._clock(), self._last_issued_at + 1)
        return encode_account(self._claims, self._operator_signer, issued_at=self._last_issued_at)

    @property
    def last_issued_at(self) -> int:
        return self._last_issued_at

    @property
    def operator_public_key(self) -> str:
        return self._operator_signer.public_key

    # ---------------------------------------------------------------- persistence
    def state_json(self) -> str:
        """The account's claims and revocations (no seeds): what the operator persists."""
        return json.dumps({"version": STATE_VERSION, "account": _account_state(self._claims),
                           "last_issued_at": self._last_issued_at}, sort_keys=True)

    @classmethod
    def from_state_json(cls, text: str, *, account_signer: NKey, operator_signer: NKey,
                        clock: Clock = now_s) -> AccountAuthority:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported account state version {state.get('version')!r}")
        return cls(_account_from_state(state["account"]), account_signer=account_signer,
                   operator_signer=operator_signer, clock=clock, last_issued_at=int(state.get("last_issued_at", 0)))


def _account_state(claims: AccountClaims) -> dict[str, Any]:
    return {"subject": claims.subject, "name": claims.name, "signing_keys": list(claims.signing_keys),
            "revocations": dict(claims.revocations), "limits": dataclasses.asdict(claims.limits),
            "exports": [export_json(export) for export in claims.exports]}


def _account_from_state(state: Mapping[str, Any]) -> AccountClaims:
    limits = dict(state["limits"])
    jetstream = JetStreamLimits(**limits.pop("jetstream"))
    return AccountClaims(subject=state["subject"], name=state["name"],
                         limits=AccountLimits(**limits, jetstream=jetstream),
                         signing_keys=tuple(state["signing_keys"]), revocations=state["revocations"],
                         exports=tuple(export_from_json(export) for export in state.get("exports", ())))


# --------------------------------------------------------------------------- pushing

async def push_account_jwt(nc: Any, account_jwt: str, *, trusted_signers: tuple[str, ...] = (),
                           timeout_s: float = 5.0) -> str:
    """Send an account JWT to the server's resolver over a system-account connection and
    wait until the server serves it; return the server's message.

    Raises ClaimsUpdateError if nobody answers, the server answers an error, or it still
    serves another JWT when ``timeout_s`` is up ("jwt updated" alone is not proof: another
    writer, or a resolver that ignores the update). The server also says "jwt updated" to
    an account JWT signed by a key it does not trust (and then fails to apply it), so
    ``trusted_signers`` (the operator signing keys) refuses such a JWT before it is sent.
    """
    decoded = decode_account(account_jwt)
    account = decoded.claims.subject
    if trusted_signers and decoded.issuer not in trusted_signers:
        raise ClaimsUpdateError(f"account {account}: the JWT is signed by {decoded.issuer}, not a trusted operator key")
    reply = await _system_request(nc, CLAIMS_UPDATE_SUBJECT, account_jwt.encode(), account, timeout_s)
    message = _update_result(account, reply)
    deadline = asyncio.get_running_loop().time() + timeout_s
    # In a cluster every server answers the update; the lookup's first answer may come from
    # one still applying it, so look again until the deadline.
    while await fetch_account_jwt(nc, account, timeout_s=timeout_s) != account_jwt:
        if asyncio.get_running_loop().time() > deadline:
            raise ClaimsUpdateError(f"account {account}: the server answered {message!r} but still serves "
                                    f"another JWT after {timeout_s:g}s (another writer, or the update was ignored)")
        await asyncio.sleep(0.05)
    return message


async def fetch_account_jwt(nc: Any, account: str, *, timeout_s: float = 5.0) -> str:
    """The account JWT the server currently uses ($SYS.REQ.ACCOUNT.<id>.CLAIMS.LOOKUP)."""
    data = await _system_request(nc, CLAIMS_LOOKUP_SUBJECT.format(account=account), b"", account, timeout_s)
    return data.decode()


async def accounts_signed_by(nc: Any, signer: str, *, timeout_s: float = 5.0) -> list[str]:
    """The accounts the server's full resolver holds whose JWT ``signer`` signed: what
    must be re-signed before that operator signing key may be retired."""
    body = json.loads(await _system_request(nc, CLAIMS_LIST_SUBJECT, b"", "*", timeout_s))
    accounts = body.get("data")
    if not isinstance(accounts, list):
        raise ClaimsUpdateError(f"unreadable account list from {CLAIMS_LIST_SUBJECT}: {body}")
    found = []
    for account in accounts:
        if decode_account(await fetch_account_jwt(nc, account, timeout_s=timeout_s)).issuer == signer:
            found.append(account)
    return found


async def _system_request(nc: Any, subject: str, payload: bytes, account: str, timeout_s: float) -> bytes:
    try:
        reply = await nc.request(subject, payload, timeout=timeout_s)
    except Exception as exc:  # no responders, timeout: not the system account, or no full resolver
        raise ClaimsUpdateError(
            f"no answer to {subject} for account {account} ({type(exc).__name__}): the connection must be "
            "a system-account user on a server with a full (or cache) JWT resolver") from exc
    return reply.data


def _update_result(account: str, data: bytes) -> str:
    try:
        body = json.loads(data)
    except json.JSONDecodeError:
        raise ClaimsUpdateError(f"account {account}: unreadable claims update reply {data[:200]!r}") from None
    error = body.get("error")
    if error or body.get("data", {}).get("code") != 200:
        detail = (error or {}).get("description") or body
        raise ClaimsUpdateError(f"the server refused the JWT of account {account}: {detail}")
    return str(body["data"].get("message", "jwt updated"))


# --------------------------------------------------------------------------- trust chain

@dataclass(frozen=True)
class TrustChain:
    """Everything one deployment (or one test/demo run) needs: keys, JWTs, two users."""

    operator: NKey
    operator_signing: NKey
    system_account: NKey
    system_signing: NKey
    app_account: NKey
    app_signing: NKey
    operator_jwt: str = field(repr=False)
    system_account_jwt: str = field(repr=False)
    app_account_jwt: str = field(repr=False)  # the first version: what the server preloads
    app_account_claims: AccountClaims = field(repr=False)
    system_user: IssuedUser = field(repr=False)
    service_user: IssuedUser = field(repr=False)
    # The signal producer's account (None in a chain made before it: the operator adds it
    # at start-up, ``signal_producer``), its first JWT and its ``signals`` user.
    producer_account: NKey | None = None
    producer_signing: NKey | None = None
    producer_account_jwt: str = field(default="", repr=False)
    producer_user: IssuedUser | None = field(default=None, repr=False)
    # The workers' user in the platform account (``tenancy.worker_permissions``: no stream
    # purge or delete, no config writes, no agent or signal publishes); None in older chains.
    worker_user: IssuedUser | None = field(default=None, repr=False)
    # During an operator signing-key rotation: the key being replaced, still trusted by the
    # servers until every account is re-signed (``rotate_operator_signing``).
    previous_operator_signing: NKey | None = None

    @property
    def trusted_signers(self) -> tuple[str, ...]:
        """The keys whose account JWTs the server accepts (strict: signing keys only)."""
        return decode_operator(self.operator_jwt).claims.signing_keys

    def signed_by_current_key(self, account_jwt: str) -> bool:
        """Whether an account JWT is signed by today's operator signing key (not the previous)."""
        return decode_account(account_jwt).issuer == self.operator_signing.public_key

    # ---------------------------------------------------------------- operator signing-key rotation
    def rotate_operator_signing(self, clock: Clock = now_s) -> TrustChain:
        """Phase 1: a new operator signing key signs from now on; the operator JWT lists it
        and the previous one (servers must load this JWT before any account is re-signed),
        and the chain's own account JWTs are re-signed with it. The operator re-signs the
        platform, producer and every tenant account on its next start / resync."""
        if self.previous_operator_signing is not None:
            raise ValueError("a rotation is under way: retire the previous operator signing key first")
        return self._with_operator_signing(NKey.create(KeyKind.OPERATOR), self.operator_signing, clock)

    def retire_previous_operator_signing(self, clock: Clock = now_s) -> TrustChain:
        """Phase 2: the operator JWT lists the new key only; from then on the servers refuse
        every account JWT the previous key signed (check first: ``accounts_signed_by``)."""
        if self.previous_operator_signing is None:
            raise ValueError("no operator signing-key rotation is under way")
        return self._with_operator_signing(self.operator_signing, None, clock)

    def _with_operator_signing(self, signing: NKey, previous: NKey | None, clock: Clock) -> TrustChain:
        keys = (signing.public_key, *((previous.public_key,) if previous else ()))
        operator = decode_operator(self.operator_jwt)
        operator_jwt = encode_operator(dataclasses.replace(operator.claims, signing_keys=keys), self.operator,
                                       issued_at=max(clock(), operator.issued_at + 1))

        def resigned(token: str, *, newer: bool) -> str:
            decoded = decode_account(token)
            return encode_account(decoded.claims, signing,
                                  issued_at=max(clock(), decoded.issued_at + 1) if newer else decoded.issued_at)

        # The platform and producer JWTs here are only the servers' preload: the operator
        # pushed later versions (exports, revocations), which must keep winning on a restart,
        # so their issue time stays. Nothing but this chain ever changes the system account.
        return dataclasses.replace(
            self, operator_signing=signing, previous_operator_signing=previous, operator_jwt=operator_jwt,
            system_account_jwt=resigned(self.system_account_jwt, newer=True),
            app_account_jwt=resigned(self.app_account_jwt, newer=False),
            producer_account_jwt=resigned(self.producer_account_jwt, newer=False) if self.producer_account_jwt else "")

    @property
    def platform(self) -> Platform:
        """The platform account and the key that signs tenants' activation tokens."""
        return Platform(self.app_account.public_key, self.app_signing)

    def authority(self, clock: Clock = now_s) -> AccountAuthority:
        """Issues every later app account JWT strictly after the preloaded one: a server
        (re)starting keeps its resolver's JWT over the preload only if that one is newer."""
        return AccountAuthority(platform_account(self.app_account_claims), account_signer=self.app_signing,
                                operator_signer=self.operator_signing, clock=clock,
                                last_issued_at=decode_account(self.app_account_jwt).issued_at)

    def server_mode(self, resolver_dir: Path | None = None) -> OperatorMode:
        """What ``EmbeddedNats(operator=...)`` (or a server config) needs."""
        return OperatorMode(
            operator_jwt=self.operator_jwt, system_account=self.system_account.public_key,
            preload={self.system_account.public_key: self.system_account_jwt,
                     self.app_account.public_key: self.app_account_jwt,
                     **({self.producer_account.public_key: self.producer_account_jwt}
                        if self.producer_account else {})},
            resolver_dir=resolver_dir)

    # ---------------------------------------------------------------- persistence (a secret)
    def to_json(self) -> str:
        """Seeds and JWTs: store as a Secret / 0600 file, never log."""
        keys = {name: getattr(self, name).seed for name in _CHAIN_KEYS if getattr(self, name) is not None}
        users = {name: {"jwt": getattr(self, name).jwt, "seed": getattr(self, name).seed}
                 for name in ("system_user", "service_user", "producer_user", "worker_user")
                 if getattr(self, name) is not None}
        producer = {"producer_account_jwt": self.producer_account_jwt} if self.producer_account_jwt else {}
        return json.dumps({"version": STATE_VERSION, "keys": keys, "operator_jwt": self.operator_jwt,
                           "system_account_jwt": self.system_account_jwt, "app_account_jwt": self.app_account_jwt,
                           "app_account": _account_state(self.app_account_claims), "users": users, **producer},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrustChain:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported trust chain version {state.get('version')!r}")
        keys = {name: NKey.from_seed(seed) for name, seed in state["keys"].items()}
        users = {name: _reissued(user["jwt"], user["seed"]) for name, user in state["users"].items()}
        return cls(**keys, operator_jwt=state["operator_jwt"], system_account_jwt=state["system_account_jwt"],
                   app_account_jwt=state["app_account_jwt"], producer_account_jwt=state.get("producer_account_jwt", ""),
                   app_account_claims=_account_from_state(state["app_account"]), **users)


_CHAIN_KEYS = ("operator", "operator_signing", "system_account", "system_signing", "app_account", "app_signing",
               "producer_account", "producer_signing", "previous_operator_signing")


def _reissued(token: str, seed: str) -> IssuedUser:
    decoded = decode_user(token)
    if NKey.from_seed(seed).public_key != decoded.claims.subject:
        raise ValueError(f"the stored seed of user {decoded.claims.name!r} does not match its JWT")
    return IssuedUser(name=decoded.claims.name, public_key=decoded.claims.subject, jwt=token, seed=seed,
                      creds_text=format_creds(token, seed), issued_at=decoded.issued_at)


def create_trust_chain(*, operator_name: str = OPERATOR_NAME, app_account_name: str = APP_ACCOUNT,
                       jetstream: JetStreamLimits | None = None, clock: Clock = now_s) -> TrustChain:
    """New keys all the way down: operator, system account (+ its user), app account
    (JetStream on, + its full-access service user and the workers' narrower user) and the
    signal producer's account (+ its ``signals`` user), each with a signing key."""
    operator, operator_signing = NKey.create(KeyKind.OPERATOR), NKey.create(KeyKind.OPERATOR)
    system, system_signing, app, app_signing, producer, producer_signing = (
        NKey.create(KeyKind.ACCOUNT) for _ in range(6))
    # Strict: the server accepts accounts signed by an operator signing key and users signed
    # by an account signing key only, so identity keys sign nothing but their own JWT and
    # can be kept offline.
    operator_jwt = encode_operator(OperatorClaims(
        subject=operator.public_key, name=operator_name, signing_keys=(operator_signing.public_key,),
        system_account=system.public_key, strict_signing_key_usage=True), operator, issued_at=clock())
    # The system account has no JetStream; its users see $SYS.> (claims updates, events).
    system_claims = AccountClaims(subject=system.public_key, name=SYSTEM_ACCOUNT,
                                  signing_keys=(system_signing.public_key,))
    system_jwt = encode_account(system_claims, operator_signing, issued_at=clock())
    # The platform account exports the fleet's subjects from its first JWT on: tenants'
    # accounts import them (with activation tokens) and never get anything else.
    app_claims = platform_account(AccountClaims(
        subject=app.public_key, name=app_account_name, signing_keys=(app_signing.public_key,),
        limits=AccountLimits(jetstream=jetstream or JetStreamLimits.unlimited())))
    system_user = AccountAuthority(system_claims, account_signer=system_signing, operator_signer=operator_signing,
                                   clock=clock).issue_user(SYSTEM_USER, UserPermissions())
    app_authority = AccountAuthority(app_claims, account_signer=app_signing, operator_signer=operator_signing,
                                     clock=clock)
    service_user = app_authority.issue_user(SERVICE_USER, UserPermissions())
    worker_user = app_authority.issue_user(WORKER_USER, worker_permissions())
    app_jwt = encode_account(app_claims, operator_signing, issued_at=clock())
    producer_claims = producer_account(producer=producer.public_key, platform=Platform(app.public_key, app_signing),
                                       issued_at=clock(), signing_keys=(producer_signing.public_key,))
    producer_user = AccountAuthority(producer_claims, account_signer=producer_signing, operator_signer=operator_signing,
                                     clock=clock).issue_user(PRODUCER_USER, producer_permissions())
    return TrustChain(operator=operator, operator_signing=operator_signing, system_account=system,
                      system_signing=system_signing, app_account=app, app_signing=app_signing,
                      operator_jwt=operator_jwt, system_account_jwt=system_jwt, app_account_jwt=app_jwt,
                      app_account_claims=app_claims, system_user=system_user, service_user=service_user,
                      producer_account=producer, producer_signing=producer_signing,
                      producer_account_jwt=encode_account(producer_claims, operator_signing, issued_at=clock()),
                      producer_user=producer_user, worker_user=worker_user)


def write_creds(path: str | os.PathLike[str], user: IssuedUser) -> Path:
    """A ``.creds`` file only its owner can read (created 0600, never widened)."""
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(user.creds_text)
    os.chmod(path, 0o600)
    return path


__all__ = [
    "APP_ACCOUNT", "CLAIMS_UPDATE_SUBJECT", "SERVICE_USER", "SYSTEM_USER", "AccountAuthority",
    "ClaimsUpdateError", "IssuedUser", "TrustChain", "accounts_signed_by", "create_trust_chain",
    "fetch_account_jwt", "now_s",
    "push_account_jwt",
    "write_creds",
]
