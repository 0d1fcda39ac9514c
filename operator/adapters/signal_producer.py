"""The signal producer's NATS account, run (SPEC §7, issue 10): built by
``operator.core.tenancy.producer_account`` (imports ``signals.*`` only, with an activation
token), signed with the operator's signing key and pushed through the system account.

A trust chain made since carries it (its keys, its first JWT, which the server preloads,
and its ``signals`` user). One made before gets it when the operator starts, as it gets
the platform's exports: keys created once and kept in the secret store
(``mt5fleet-nats-producer``: ``state.json`` with the seeds, never logged, and
``signals.creds``, the producer user's credentials to hand to the signal engine).

The operator pushes the account only when the server does not serve one that imports what
the model says with tokens the platform would honour: a producer account re-signed by an
administrator (say, with a revoked producer user) is kept as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.operator.adapters.nats_accounts import (
    AccountAuthority,
    Clock,
    IssuedUser,
    TrustChain,
    fetch_account_jwt,
    now_s,
    push_account_jwt,
)
from mt5fleet.operator.adapters.secret_store import SecretStore
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.nats_jwt import (
    AccountClaims,
    JwtError,
    KeyKind,
    NKey,
    decode_account,
    encode_account,
    verify_import,
)

log = logging.getLogger("mt5fleet.operator.producer")

PRODUCER_SECRET = "mt5fleet-nats-producer"
STATE_KEY = "state.json"
CREDS_KEY = "signals.creds"
STATE_VERSION = 1


@dataclass(frozen=True)
class ProducerState:
    """The producer account's keys (secrets) and the account JWT last pushed or served."""

    account: NKey
    signing: NKey
    jwt: str = field(repr=False)

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "account": self.account.seed, "signing": self.signing.seed,
                           "jwt": self.jwt}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProducerState:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported producer state version {state.get('version')!r}")
        return cls(NKey.from_seed(state["account"]), NKey.from_seed(state["signing"]), state["jwt"])


def producer_fits(claims: AccountClaims, account: str, platform: AccountClaims) -> bool:
    """Is ``claims`` the producer account, importing exactly what the model says, each
    import with a token the platform's exports honour?"""
    wanted = {(i.subject, i.type, i.account) for i in tenancy.producer_imports(
        producer=account, platform=_unsigned_platform(platform), issued_at=0)}
    if claims.subject != account or {(i.subject, i.type, i.account) for i in claims.imports} != wanted:
        return False
    try:
        return all(verify_import(i, importer=account, exporter=platform) is not None for i in claims.imports)
    except JwtError:
        return False


def _unsigned_platform(platform: AccountClaims) -> tenancy.Platform:
    """Only the import shapes are compared: any account key signs the throw-away tokens."""
    return tenancy.Platform(platform.subject, NKey.create(KeyKind.ACCOUNT))


async def ensure_producer_account(chain: TrustChain, secrets: SecretStore, system_nc: Any, *,
                                  clock: Clock = now_s) -> ProducerState:
    """The producer account as the servers serve it imports ``signals.*`` (a trust chain
    made before it gets one now, with a ``signals`` user in the secret store)."""
    state = await _load(secrets)
    if chain.producer_account is not None and chain.producer_signing is not None:
        if state is None or state.account.public_key != chain.producer_account.public_key:
            state = ProducerState(chain.producer_account, chain.producer_signing, chain.producer_account_jwt)
    elif state is None:
        state = await _create(chain, secrets, clock)
    platform = chain.authority().claims
    try:
        served = await fetch_account_jwt(system_nc, state.account.public_key)
        fits = producer_fits(decode_account(served).claims, state.account.public_key, platform) \
            and chain.signed_by_current_key(served)  # else re-signed: an operator key rotation
    except Exception:  # not served at all (or unreadable): push it
        served, fits = "", False
    if fits:
        if served != state.jwt:  # re-signed elsewhere (a revocation, say): keep it
            state = ProducerState(state.account, state.signing, served)
            await _save(secrets, state)
        return state
    issued_at = max(clock(), _issued_at(state.jwt) + 1, _issued_at(served) + 1)
    claims = tenancy.producer_account(producer=state.account.public_key, platform=chain.platform,
                                      issued_at=issued_at, signing_keys=(state.signing.public_key,))
    old = decode_account(state.jwt).claims
    claims = AccountClaims(subject=claims.subject, name=old.name, limits=old.limits, signing_keys=old.signing_keys,
                           revocations=old.revocations, imports=claims.imports)
    token = encode_account(claims, chain.operator_signing, issued_at=issued_at)
    await push_account_jwt(system_nc, token, trusted_signers=chain.trusted_signers)
    state = ProducerState(state.account, state.signing, token)
    await _save(secrets, state)
    log.info("pushed the signal producer's account %s", state.account.public_key)
    return state


async def _create(chain: TrustChain, secrets: SecretStore, clock: Clock) -> ProducerState:
    account, signing = NKey.create(KeyKind.ACCOUNT), NKey.create(KeyKind.ACCOUNT)
    issued_at = clock()
    claims = tenancy.producer_account(producer=account.public_key, platform=chain.platform, issued_at=issued_at,
                                      signing_keys=(signing.public_key,))
    user = AccountAuthority(claims, account_signer=signing, operator_signer=chain.operator_signing,
                            clock=clock).issue_user(tenancy.PRODUCER_USER, tenancy.producer_permissions())
    state = ProducerState(account, signing, encode_account(claims, chain.operator_signing, issued_at=issued_at))
    await _save(secrets, state, user)
    log.info("created the signal producer's account %s; its user's credentials are in the secret %s (%s)",
             account.public_key, PRODUCER_SECRET, CREDS_KEY)
    return state


def _issued_at(token: str) -> int:
    return decode_account(token).issued_at if token else 0


async def _load(secrets: SecretStore) -> ProducerState | None:
    stored = await secrets.get(PRODUCER_SECRET)
    return ProducerState.from_json(stored[STATE_KEY].decode()) if stored and STATE_KEY in stored else None


async def _save(secrets: SecretStore, state: ProducerState, user: IssuedUser | None = None) -> None:
    stored = await secrets.get(PRODUCER_SECRET) or {}
    data = {**stored, STATE_KEY: state.to_json().encode()}
    if user is not None:
        data[CREDS_KEY] = user.creds_text.encode()
    await secrets.put(PRODUCER_SECRET, data)


__all__ = ["CREDS_KEY", "PRODUCER_SECRET", "ProducerState", "ensure_producer_account", "producer_fits"]
