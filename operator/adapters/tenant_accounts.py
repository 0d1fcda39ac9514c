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
    encode_account,
)

log = logging.getLogger("mt5fleet.operator.tenants")

STATE_KEY = "tenant.json"
STATE_VERSION = 1
EVERY_USER = "*"  # a revocation of "*" covers every user of the account


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

    @classmethod
    def create(cls) -> TenantState:
        return cls(NKey.create(KeyKind.ACCOUNT), NKey.create(KeyKind.ACCOUNT))

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "account": self.account.seed, "signing": self.signing.seed,
                           "symbols": list(self.symbols), "revocations": dict(self.revocations), "jwt": self.jwt,
                           "limits": dataclasses.asdict(self.limits) if self.limits else None,
                           "last_issued_at": self.last_issued_at}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TenantState:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported tenant state version {state.get('version')!r}")
        limits = tenancy.TenantLimits(**state["limits"]) if state.get("limits") else None
        return cls(NKey.from_seed(state["account"]), NKey.from_seed(state["signing"]), tuple(state["symbols"]),
                   limits, dict(state["revocations"]), state["jwt"], int(state["last_issued_at"]))


CLOSED_LIMITS = tenancy.TenantLimits(conn=0, subs=0, payload=0, data=0)


class TenantAccounts:
    """Creates, re-signs, pushes and closes tenant accounts; issues and revokes their users."""

    def __init__(self, platform: tenancy.Platform, operator_signer: NKey, system_nc: Any, secrets: SecretStore, *,
                 trusted_signers: tuple[str, ...] = (), clock: Clock = now_s) -> None:
        self.platform, self.operator_signer, self.system_nc = platform, operator_signer, system_nc
        self.secrets, self.trusted_signers, self.clock = secrets, trusted_signers, clock

    async def account_key(self, user_id: str) -> str | None:
        state = await self._load(user_id)
        return state.account.public_key if state else None

    async def ensure(self, user_id: str, symbols: Iterable[str], limits: tenancy.TenantLimits) -> bool:
        """The tenant's account with these md symbols and limits, on the server; True if it
        was (re-)signed and pushed. Unchanged inputs cost one lookup (drift repair)."""
        symbols = tuple(sorted(set(symbols)))
        state = await self._load(user_id)
        if state and (state.symbols, state.limits) == (symbols, limits) and await self._served(state):
            return False
        state = dataclasses.replace(state or TenantState.create(), symbols=symbols, limits=limits)
        await self._push(user_id, state)
        return True

    async def issue_user(self, user_id: str, permissions: UserPermissions, *, key: NKey | None = None,
                         not_before_iat: int = 0) -> IssuedUser:
        """A user JWT signed by the tenant account's signing key. No limits of its own: the
        account carries the tier's, so a tier change never needs a new user JWT."""
        state = await self._require(user_id)
        # Only the account's identity and signing key matter to a user JWT: no imports signed.
        identity = AccountClaims(subject=state.account.public_key, name=user_id,
                                 signing_keys=(state.signing.public_key,))
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
                                        signing_keys=(state.signing.public_key,))
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


__all__ = ["STATE_KEY", "TenantAccounts", "TenantState", "tenant_secret_name"]
