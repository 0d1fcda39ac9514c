"""The appliers' CredentialIssuer over NATS JWT auth: the user's access as the reconcile
core computed it (``reconcile.Desired.access``), user JWTs signed by the app account's signing key,
revocations pushed to the servers as a new account JWT and persisted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from mt5fleet.operator.adapters.appliers import IssuedCredentials
from mt5fleet.operator.adapters.nats_accounts import AccountAuthority, push_account_jwt
from mt5fleet.operator.core.nats_jwt import NKey, decode_user, parse_creds
from mt5fleet.operator.core.permissions import UserAccess

log = logging.getLogger("mt5fleet.operator.credentials")

Persist = Callable[[str], Awaitable[Any]]


class JwtIssuer:
    def __init__(self, authority: AccountAuthority, system_nc: Any, persist: Persist, *,
                 trusted_signers: tuple[str, ...] = ()) -> None:
        self.authority, self.system_nc, self.persist = authority, system_nc, persist
        self.trusted_signers = trusted_signers

    def digest(self, access: UserAccess) -> str:
        """Changes exactly when the permissions or limits a new JWT would carry change."""
        body = json.dumps({"permissions": asdict(access.permissions), "limits": asdict(access.limits),
                           "account": self.authority.account_public_key}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def issue(self, access: UserAccess, previous: bytes | None = None) -> IssuedCredentials:
        """New credentials; with ``previous`` (the user's current .creds) the same key gets
        a JWT issued strictly later, so the old one can be revoked without the new."""
        key, not_before = None, 0
        if previous:
            old_jwt, seed = parse_creds(previous.decode())
            key, not_before = NKey.from_seed(seed), decode_user(old_jwt).issued_at + 1
        issued = self.authority.issue_user(access.user_id, access.permissions, access.limits, key=key,
                                           not_before_iat=not_before)
        return IssuedCredentials(creds=issued.creds_text.encode(), public_key=issued.public_key,
                                 issued_at=issued.issued_at)

    def narrows(self, previous: bytes, access: UserAccess) -> bool:
        """Whether new credentials would take away something ``previous`` (the user's
        current .creds) allows. Only then must the old JWT be revoked: after an upgrade
        it may stay valid, so an agent whose creds file was copied to a VPS keeps working
        until it gets the new file (it only misses the new symbols meanwhile)."""
        old = decode_user(parse_creds(previous.decode())[0]).claims
        return not (_covers(access.permissions.pub.allow, old.permissions.pub.allow)
                    and _covers(access.permissions.sub.allow, old.permissions.sub.allow)
                    and all(_within(getattr(old.limits, name), getattr(access.limits, name))
                            for name in ("payload", "subs", "data")))

    async def revoke(self, public_key: str, issued_before: int | None = None) -> None:
        """Revoked in the account JWT (every JWT of the key issued before ``issued_before``,
        default all up to now), pushed to the servers (which cut the connections using
        them), then persisted so a restarted operator keeps the revocation."""
        at = None if issued_before is None else issued_before - 1
        self.authority.revoke(public_key, at)
        await push_account_jwt(self.system_nc, self.authority.account_jwt(), trusted_signers=self.trusted_signers)
        await self.persist(self.authority.state_json())
        log.info("revoked NATS user %s", public_key)


def _covers(new: Sequence[str], old: Sequence[str]) -> bool:
    return set(old) <= set(new)


def _within(old: int, new: int) -> bool:
    """The old limit is no larger than the new one (-1 is unlimited)."""
    return new == -1 or (old != -1 and old <= new)
