"""The appliers' CredentialIssuer over NATS JWT auth, one account per tenant: the tenant's
account carries its md imports and its tier's limits (``tenant_accounts``); the agent's
user JWT, signed by that account, carries only the user's own grants (defence in depth:
the account boundary is the guarantee), so it changes only when the account key does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

from mt5fleet.operator.adapters.appliers import IssuedCredentials
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts
from mt5fleet.operator.core.nats_jwt import NKey, decode_user, parse_creds
from mt5fleet.operator.core.permissions import UserAccess
from mt5fleet.operator.core.tenancy import TENANT_CONNECTIONS, TenantLimits

log = logging.getLogger("mt5fleet.operator.credentials")


def tenant_limits(access: UserAccess) -> TenantLimits:
    """The tier's NATS limits (as the reconcile core computed them) on the whole account."""
    return TenantLimits(conn=TENANT_CONNECTIONS, subs=access.limits.subs, payload=access.limits.payload,
                        data=access.limits.data)


class JwtIssuer:
    def __init__(self, tenants: TenantAccounts) -> None:
        self.tenants = tenants

    async def digest(self, access: UserAccess) -> str:
        """Changes exactly when a new user JWT would differ: its grants, its account, or the
        account's signing key (rotated: the agent's key gets a JWT from the new one)."""
        body = json.dumps({"permissions": asdict(access.tenant_permissions),
                           "account": await self.tenants.account_key(access.user_id),
                           "signer": await self.tenants.signing_key(access.user_id)}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    async def ensure_account(self, access: UserAccess, *, rotation: str = "") -> bool:
        """The tenant's account with its md imports and limits; True if it was re-signed.
        A new ``rotation`` token rotates its signing key (``tenant_accounts``)."""
        return await self.tenants.ensure(access.user_id, access.md_symbols, tenant_limits(access), rotation=rotation)

    async def issue(self, access: UserAccess, previous: bytes | None = None) -> IssuedCredentials:
        """New credentials; with ``previous`` (the user's current .creds) of the same account
        the agent's key stays and gets a JWT issued strictly later."""
        key, not_before = None, 0
        if previous:
            old_jwt, seed = parse_creds(previous.decode())
            old = decode_user(old_jwt)
            if old.claims.issuer_account == await self.tenants.account_key(access.user_id):
                key, not_before = NKey.from_seed(seed), old.issued_at + 1
        issued = await self.tenants.issue_user(access.user_id, access.tenant_permissions, key=key,
                                               not_before_iat=not_before)
        return IssuedCredentials(creds=issued.creds_text.encode(), public_key=issued.public_key,
                                 issued_at=issued.issued_at)

    async def revoke(self, user_id: str, public_key: str) -> None:
        """Re-signs only this tenant's account; the servers close the user's connections."""
        await self.tenants.revoke(user_id, public_key)

    async def close(self, user_id: str) -> bool:
        return await self.tenants.close(user_id)
