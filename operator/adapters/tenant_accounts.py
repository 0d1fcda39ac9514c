"""One NATS account per tenant, run (SPEC §7, issue 10): each TradingClient's account is
built by ``operator.core.tenancy``, signed with the operator's signing key and pushed
through the system account; its agent's user is signed by that account's signing key.

Per tenant the authority keeps, in the secret store (``mt5fleet-nats-tenant-<uid>``): the
account key and its signing key (seeds: never logged, not in ``repr``), what the account
was last signed with (symbols, limits, revocations) and the JWT pushed, so that only a
change of those re-signs the account, and a server that lost it gets it again.

Why revocation lives here and not in the platform account: the server checks a user's JWT
against its own account's JWT, so revoking a tenant's user is re-signing that tenant's
account, and nothing of any other tenant is touched.

Signing-key rotation (a TradingClient's ``mt5fleet.io/rotate-signing-key`` annotation, a new
value per rotation): a new signing key signs the agent's next JWT at once; the previous key
stays in the account JWT for ``grace_s`` so the running agent keeps its connection until it
reconnects with its new ``.creds``, then it is retired. From then on the server refuses
every JWT the previous key signed and closes the connections still using one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.operator.adapters.nats_accounts import (
    AccountAuthority,
    Clock,
    IssuedUser,
    fetch_account_jwt,
    now_s,
    push_account_jwt,
)
from mt5fleet.operator.adapters.secret_store import SecretStore
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.nats_jwt import (
    AccountClaims,
    KeyKind,
    NatsLimits,
    NKey,
    UserPermissions,
    decode_account,
    encode_account,
)

log = logging.getLogger("mt5fleet.operator.tenants")

STATE_KEY = "tenant.json"
STATE_VERSION = 1
EVERY_USER = "*"  # a revocation of "*" covers every user of the account
# Long enough for an agent to reconnect with the new .creds its Secret holds (it re-reads
# them on every reconnect); the operator's resync (60 s) retires the key after it.
ROTATION_GRACE_S = 3600


def tenant_secret_name(user_id: str) -> str:
    return f"mt5fleet-nats-tenant-{user_id}"


@dataclass(frozen=True)
class TenantState:
    """What the authority remembers of one tenant's account (the seeds are secrets)."""

    account: NKey
    signing: NKey
    symbols: tuple[str, ...] = ()
    limits: tenancy.TenantLimits | None = None
    revocations: Mapping[str, int] = field(default_factory=dict)
    jwt: str = field(default="", repr=False)   # the account JWT last pushed
    last_issued_at: int = 0
    previous_signing: NKey | None = None         # still trusted until rotated_at + grace
    rotated_at: int = 0
    rotation: str = ""                           # the last rotation request handled

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """What the account JWT lists: the current key, and the previous one in its grace."""
        previous = (self.previous_signing.public_key,) if self.previous_signing else ()
        return (self.signing.public_key, *previous)

    def rotated(self, request: str, now: int) -> TenantState:
        """A new signing key; the current one becomes the previous (replacing any older)."""
        return dataclasses.replace(self, signing=NKey.create(KeyKind.ACCOUNT), previous_signing=self.signing,
                                   rotated_at=now, rotation=request)

    @classmethod
    def create(cls) -> TenantState:
        return cls(NKey.create(KeyKind.ACCOUNT), NKey.create(KeyKind.ACCOUNT))

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "account": self.account.seed, "signing": self.signing.seed,
                           "symbols": list(self.symbols), "revocations": dict(self.revocations), "jwt": self.jwt,
                           "limits": dataclasses.asdict(self.limits) if self.limits else None,
                           "last_issued_at": self.last_issued_at, "rotation": self.rotation,
                           "previous_signing": self.previous_signing.seed if self.previous_signing else None,
                           "rotated_at": self.rotated_at}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TenantState:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported tenant state version {state.get('version')!r}")
        limits = tenancy.TenantLimits(**state["limits"]) if state.get("limits") else None
        previous = state.get("previous_signing")
        return cls(NKey.from_seed(state["account"]), NKey.from_seed(state["signing"]), tuple(state["symbols"]),
                   limits, dict(state["revocations"]), state["jwt"], int(state["last_issued_at"]),
                   NKey.from_seed(previous) if previous else None, int(state.get("rotated_at", 0)),
                   state.get("rotation", ""))


CLOSED_LIMITS = tenancy.TenantLimits(conn=0, subs=0, payload=0, data=0)


class TenantAccounts:
    """Creates, re-signs, pushes and closes tenant accounts; issues and revokes their users."""

    def __init__(self, platform: tenancy.Platform, operator_signer: NKey, system_nc: Any, secrets: SecretStore, *,
                 trusted_signers: tuple[str, ...] = (), clock: Clock = now_s,
                 grace_s: int = ROTATION_GRACE_S) -> None:
        self.platform, self.operator_signer, self.system_nc = platform, operator_signer, system_nc
        self.secrets, self.trusted_signers, self.clock = secrets, trusted_signers, clock
        self.grace_s = grace_s

    async def account_key(self, user_id: str) -> str | None:
        state = await self._load(user_id)
        return state.account.public_key if state else None

    async def signing_key(self, user_id: str) -> str | None:
        """The key that signs the tenant's next user JWT (it changes on rotation)."""
        state = await self._load(user_id)
        return state.signing.public_key if state else None

    async def ensure(self, user_id: str, symbols: Iterable[str], limits: tenancy.TenantLimits, *,
                     rotation: str = "") -> bool:
        """The tenant's account with these md symbols and limits, on the server; True if it
        was (re-)signed and pushed. Unchanged inputs cost one lookup (drift repair).
        ``rotation``: a request token; a new one rotates the signing key (module doc), and a
        previous key past its grace is retired here."""
        symbols = tuple(sorted(set(symbols)))
        stored = await self._load(user_id)
        state = self._rotating(stored, rotation) if stored else None
        if state is stored and state and (state.symbols, state.limits) == (symbols, limits) \
                and await self._served(state):
            return False
        if stored is None:
            # A new tenant's keys are kept before its account reaches any server: an operator
            # stopped between the push and the save would otherwise make a second account for
            # the tenant on its next start, leaving the first one on the servers for good.
            stored = TenantState.create()
            await self._save(user_id, stored)
        state = dataclasses.replace(state or stored, symbols=symbols, limits=limits)
        await self._push(user_id, state)
        return True

    def _rotating(self, state: TenantState, rotation: str) -> TenantState:
        """``state`` itself when no key changes; else with a new key or the previous retired."""
        now = self.clock()
        if rotation and rotation != state.rotation:
            log.info("rotating the signing key of tenant account %s", state.account.public_key)
            return state.rotated(rotation, now)
        if state.previous_signing and now - state.rotated_at >= self.grace_s:
            log.info("retired the previous signing key of tenant account %s", state.account.public_key)
            return dataclasses.replace(state, previous_signing=None)
        return state

    async def issue_user(self, user_id: str, permissions: UserPermissions, *, key: NKey | None = None,
                         not_before_iat: int = 0) -> IssuedUser:
        """A user JWT signed by the tenant account's signing key. No limits of its own: the
        account carries the tier's, so a tier change never needs a new user JWT."""
        state = await self._require(user_id)
        # Only the account's identity and signing key matter to a user JWT: no imports signed.
        identity = AccountClaims(subject=state.account.public_key, name=user_id, signing_keys=state.signing_keys)
        authority = AccountAuthority(identity, account_signer=state.signing, operator_signer=self.operator_signer,
                                     clock=self.clock)
        return authority.issue_user(user_id, permissions, NatsLimits(), key=key, not_before_iat=not_before_iat)

    async def revoke(self, user_id: str, public_key: str) -> None:
        """Every JWT of ``public_key`` issued up to now: the server closes its connections."""
        state = await self._load(user_id)
        if state is None:
            return
        revocations = {**state.revocations, public_key: self.clock()}
        await self._push(user_id, dataclasses.replace(state, revocations=revocations))
        log.info("revoked NATS user %s of tenant %s", public_key, user_id)

    async def close(self, user_id: str) -> bool:
        """The tenant is gone: its account loses every import and every user, then its keys
        are forgotten. The closed account JWT stays in the resolver (it grants nothing)."""
        state = await self._load(user_id)
        if state is None:
            return False
        # No imports, no connections, no signing key: a user minted later with a stolen
        # signing seed is refused too (a '*' revocation covers only JWTs issued until now).
        closed = dataclasses.replace(state, symbols=(), revocations={EVERY_USER: self.clock()},
                                     limits=CLOSED_LIMITS)
        await self._push(user_id, closed, imports=False)
        await self.secrets.delete(tenant_secret_name(user_id))
        log.info("closed the NATS account of tenant %s", user_id)
        return True

    # ------------------------------------------------------------------ internals
    def _claims(self, user_id: str, state: TenantState, issued_at: int, *, imports: bool = True) -> AccountClaims:
        limits = state.limits or tenancy.TenantLimits(conn=0, subs=0, payload=0, data=0)
        claims = tenancy.tenant_account(user_id, state.symbols, limits, tenant=state.account.public_key,
                                        platform=self.platform, issued_at=issued_at,
                                        signing_keys=state.signing_keys)
        if not imports:  # closed: nothing imported, nobody signs for it any more
            return dataclasses.replace(claims, revocations=state.revocations, imports=(), signing_keys=())
        return dataclasses.replace(claims, revocations=state.revocations)

    async def _push(self, user_id: str, state: TenantState, *, imports: bool = True) -> None:
        # Strictly later than the last JWT: resolvers keep the newest by issue time.
        issued_at = max(self.clock(), state.last_issued_at + 1)
        token = encode_account(self._claims(user_id, state, issued_at, imports=imports), self.operator_signer,
                               issued_at=issued_at)
        await push_account_jwt(self.system_nc, token, trusted_signers=self.trusted_signers)
        await self._save(user_id, dataclasses.replace(state, jwt=token, last_issued_at=issued_at))

    async def _served(self, state: TenantState) -> bool:
        """The server serves what was last pushed, signed by today's operator signing key
        (after an operator key rotation every tenant is re-signed on its next reconcile)."""
        if not state.jwt or decode_account(state.jwt).issuer != self.operator_signer.public_key:
            return False
        try:
            return await fetch_account_jwt(self.system_nc, state.account.public_key) == state.jwt
        except Exception:  # no answer: push again, which says why if it fails too
            return False

    async def _load(self, user_id: str) -> TenantState | None:
        stored = await self.secrets.get(tenant_secret_name(user_id))
        return TenantState.from_json(stored[STATE_KEY].decode()) if stored and STATE_KEY in stored else None

    async def _require(self, user_id: str) -> TenantState:
        state = await self._load(user_id)
        if state is None:
            raise LookupError(f"tenant {user_id} has no NATS account yet")
        return state

    async def _save(self, user_id: str, state: TenantState) -> None:
        await self.secrets.put(tenant_secret_name(user_id), {STATE_KEY: state.to_json().encode()},
                               {"mt5fleet.io/user": user_id})


__all__ = ["ROTATION_GRACE_S", "STATE_KEY", "TenantAccounts", "TenantState", "tenant_secret_name"]
