"""The appliers' CredentialIssuer over NATS JWT auth: per-user permissions from the tier
(``permissions.user_access``), user JWTs signed by the app account's signing key,
revocations pushed to the servers as a new account JWT and persisted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from mt5fleet.operator.appliers import IssuedCredentials
from mt5fleet.operator.nats_accounts import AccountAuthority, push_account_jwt
from mt5fleet.operator.permissions import TierLimits, UserAccess, user_access
from mt5fleet.operator.tiers import Tier

log = logging.getLogger("mt5fleet.operator.credentials")

Persist = Callable[[str], Awaitable[Any]]


def access_for(user_id: str, md_symbols: Sequence[str], tier: Tier) -> UserAccess:
    return user_access(user_id, md_symbols, TierLimits(payload=tier.max_payload_bytes,
                                                       subscriptions=tier.max_subscriptions,
                                                       data=tier.max_data_bytes))


class JwtIssuer:
    def __init__(self, authority: AccountAuthority, system_nc: Any, persist: Persist, *,
                 trusted_signers: tuple[str, ...] = ()) -> None:
        self.authority, self.system_nc, self.persist = authority, system_nc, persist
        self.trusted_signers = trusted_signers

    def digest(self, user_id: str, md_symbols: Sequence[str], tier: Tier) -> str:
        """Changes exactly when the permissions or limits a new JWT would carry change."""
        access = access_for(user_id, md_symbols, tier)
        body = json.dumps({"permissions": asdict(access.permissions), "limits": asdict(access.limits),
                           "account": self.authority.account_public_key}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def issue(self, user_id: str, md_symbols: Sequence[str], tier: Tier) -> IssuedCredentials:
        access = access_for(user_id, md_symbols, tier)
        issued = self.authority.issue_user(user_id, access.permissions, access.limits)
        return IssuedCredentials(creds=issued.creds_text.encode(), public_key=issued.public_key)

    async def revoke(self, public_key: str) -> None:
        """Revoked in the account JWT, pushed to the servers (which cut the user's
        connections), then persisted so a restarted operator keeps the revocation."""
        self.authority.revoke(public_key)
        await push_account_jwt(self.system_nc, self.authority.account_jwt(), trusted_signers=self.trusted_signers)
        await self.persist(self.authority.state_json())
        log.info("revoked NATS user %s", public_key)
