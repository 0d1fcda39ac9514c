"""Idempotent appliers: each ``ensure_*`` makes one resource match what the core wants
(``None``: must not exist) and says what it did. Running one twice changes nothing the
second time; a resource deleted behind the operator's back comes back on the next run.

The per-user JetStream resources: the command-delivery design (SPEC §2.2) gives a user no
consumer of its own at all — live commands go over a plain subscription, and after a
reconnect the agent reads what it missed from the catch-up service (direct gets). So for a
user the operator makes sure the shared streams that carry its subjects exist, and on
delete purges its subjects from them.
Execution reports and account history are kept on delete: they are the audit trail
(they age out with the streams' max age).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError

from mt5fleet.operator.adapters.secret_store import SecretStore
from mt5fleet.operator.core.changes import Applied, Change
from mt5fleet.operator.core.permissions import UserAccess
from mt5fleet.proto import subjects, validation
from mt5fleet.proto.domain.config import ClientConfig, SealedCredentials
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime import sealing as mt5_credentials
from mt5fleet.proto.v1 import config_pb2
from mt5fleet.proto.validation_config import client_config_message

log = logging.getLogger("mt5fleet.operator.adapters.appliers")

UNREAD = object()  # ensure_config: the caller has not read the current entry

# Streams purged of a deleted user's subjects; TC_EXECUTIONS and TC_ACCOUNT are kept (audit).
PURGED_ON_DELETE = (subjects.PRICES_STREAM, subjects.SYMBOLS_STREAM, subjects.HEARTBEAT_STREAM,
                    subjects.COMMANDS_STREAM)
USER_STREAMS = (subjects.PRICES_STREAM, subjects.ACCOUNT_STREAM, subjects.SYMBOLS_STREAM,
                subjects.EXECUTIONS_STREAM, subjects.HEARTBEAT_STREAM, subjects.COMMANDS_STREAM)

# Keys of the agent's bootstrap Secret.
CREDS_KEY = "user.creds"
PUBLIC_KEY_KEY = "user-public-key"
DIGEST_KEY = "permissions-digest"
AGENT_KEY_KEY = "agent.key"
BOOTSTRAP_KEY = "bootstrap.json"
CA_KEY = "ca.crt"
# A password Secret applied with its TradingClient may reach the watch a moment after it.
PASSWORD_WAIT_S = 3.0


def bootstrap_secret_name(user_id: str) -> str:
    return f"mt5fleet-agent-{user_id}"


@dataclass(frozen=True)
class IssuedCredentials:
    creds: bytes          # the .creds file: user JWT + NKey seed (secret)
    public_key: str       # the user's NKey public key, for revocation
    issued_at: int = 0    # the JWT's iat, unix seconds


class CredentialIssuer(Protocol):
    """Issues and revokes per-user NATS credentials inside the tenant's own account (JWT
    auth: see jwt_issuer.py); ``access`` is the user's desired grants, md symbols and
    limits (reconcile.Desired.access)."""

    async def digest(self, access: UserAccess) -> str: ...

    async def ensure_account(self, access: UserAccess, *, rotation: str = "") -> bool: ...

    async def issue(self, access: UserAccess, previous: bytes | None = None) -> IssuedCredentials: ...

    async def revoke(self, user_id: str, public_key: str) -> None: ...

    async def close(self, user_id: str) -> bool: ...


@dataclass(frozen=True)
class Connection:
    """How an agent reaches NATS, written into its bootstrap Secret."""
    nats_urls: tuple[str, ...]
    ca_pem: bytes | None = None


class UserAppliers:
    def __init__(self, js: Any, secrets: SecretStore, issuer: CredentialIssuer, connection: Connection,
                 layout: bootstrap.JetStreamLayout | None = None) -> None:
        self.js, self.secrets, self.issuer, self.connection = js, secrets, issuer, connection
        self.layout = layout or bootstrap.JetStreamLayout()
        self._config_kv: Any = None

    # ------------------------------------------------------------------ JetStream
    async def ensure_streams(self) -> Applied:
        """The shared streams every user's subjects live in, and the config bucket (one
        check serves all users). Only what is missing is created: limits and replicas of
        existing ones belong to ``mt5fleet nats bootstrap`` (its --config / --replicas),
        which the operator must not undo; ``layout`` should carry the same overrides so a
        recreated stream comes back as bootstrap made it."""
        recreated = []
        for name in USER_STREAMS:
            try:
                await self.js.stream_info(name)
            except NotFoundError:
                await bootstrap.ensure_stream(self.js, self.layout.stream(name))
                recreated.append(name)
        bucket = self.layout.bucket(subjects.CONFIG_BUCKET)
        try:
            await self.js.stream_info(bucket.stream_name)
        except NotFoundError:
            await bootstrap.ensure_bucket(self.js, bucket)
            self._config_kv = None
            recreated.append(bucket.stream_name)
        return Applied("streams", Change.CREATED if recreated else Change.UNCHANGED, ", ".join(recreated))

    async def ensure_user_streams(self, user_id: str, present: bool) -> Applied:
        if present:
            return await self.ensure_streams()
        purged, everything = 0, subjects.user_subjects_all(user_id)
        for name in PURGED_ON_DELETE:
            try:
                # Only a stream that holds the user's messages counts: a second delete
                # (or a user that never published) reports nothing purged.
                if (await self.js.stream_info(name, subjects_filter=everything)).state.subjects:
                    await self.js.purge_stream(name, subject=everything)
                    purged += 1
            except NotFoundError:
                pass
        return Applied("streams", Change.DELETED if purged else Change.UNCHANGED, f"purged {purged} stream(s)")

    # ------------------------------------------------------------------ tc-config
    async def ensure_config(self, user_id: str, config: ClientConfig | None, now_ms: int, *,
                            current: ClientConfig | None | object = UNREAD) -> Applied:
        """``current``: the entry as the caller just read it (``current_config``), so a
        reconcile reads it once; an unreadable or invalid entry reads as None and is rewritten.
        The typed config is encoded here, once, with the wire contract's one encoder."""
        kv = await self._kv()
        if current is UNREAD:
            current = await self.current_config(user_id, now_ms)
        if config is None:
            if await _kv_get(kv, user_id) is None:
                return Applied("config", Change.UNCHANGED)
            await kv.delete(user_id)
            return Applied("config", Change.DELETED)
        if isinstance(current, ClientConfig) and current.evolve(updated_at_ms=0) == config:
            return Applied("config", Change.UNCHANGED)  # equal but for when it was written
        await kv.put(user_id, client_config_message(config.evolve(updated_at_ms=now_ms)).SerializeToString())
        change = Change.CREATED if current is None else Change.UPDATED
        return Applied("config", change, f"generation {config.generation}")

    async def served_users(self) -> int:
        """How many users the workers serve: the live entries of the config bucket, which
        the operator writes from the TradingClients. The pool is sized from this (not from
        what one operator process has seen), so a restarted operator sizes it the same."""
        kv = await self._kv()
        try:
            return len(await kv.keys())
        except NoKeysError:
            return 0

    async def _kv(self) -> Any:
        if self._config_kv is None:
            self._config_kv = await self.js.key_value(subjects.CONFIG_BUCKET)
        return self._config_kv

    # ------------------------------------------------------------------ credentials + bootstrap Secret
    async def ensure_credentials(self, user_id: str, access: UserAccess | None, *, close: bool = False,
                                 rotation: str = "") -> Applied:
        """The tenant's account (md imports, tier limits: re-signed only when they change)
        and its agent's user JWT (issued when it has none, or its grants, account or
        signing key changed). ``access`` None (paused, deleted): the user is revoked, and
        with ``close`` (deleted) the tenant's account is closed too. ``rotation``: the
        TradingClient's signing-key rotation request (``tenant_accounts``)."""
        name = bootstrap_secret_name(user_id)
        stored = await self.secrets.get(name) or {}
        old_key = stored.get(PUBLIC_KEY_KEY, b"").decode()
        if access is None:
            return await self._revoke(user_id, name, stored, old_key, close)
        # The account first: a downgrade bites at once (the server drops the imports), and
        # the agent stays connected through any change of symbols or tier.
        resigned = await self.issuer.ensure_account(access, rotation=rotation)
        digest = await self.issuer.digest(access)
        if old_key and stored.get(DIGEST_KEY, b"").decode() == digest and CREDS_KEY in stored:
            return Applied("credentials", Change.UPDATED if resigned else Change.UNCHANGED,
                           "account re-signed" if resigned else "")
        # Same key, new JWT (or a new key in a new account): the agent's next (re)connect
        # reads the new .creds from its Secret; the old JWT grants no more than the
        # account now imports, so it need not be revoked.
        issued = await self.issuer.issue(access, stored.get(CREDS_KEY))
        await self.secrets.put(name, {**stored, CREDS_KEY: issued.creds, PUBLIC_KEY_KEY: issued.public_key.encode(),
                                      DIGEST_KEY: digest.encode()})
        return Applied("credentials", Change.UPDATED if old_key else Change.CREATED)

    async def _revoke(self, user_id: str, name: str, stored: dict[str, bytes], old_key: str, close: bool) -> Applied:
        if old_key:
            await self.issuer.revoke(user_id, old_key)
            kept = {k: v for k, v in stored.items() if k not in (CREDS_KEY, PUBLIC_KEY_KEY, DIGEST_KEY)}
            await self.secrets.put(name, kept)
        closed = close and await self.issuer.close(user_id)
        if not (old_key or closed):
            return Applied("credentials", Change.UNCHANGED)
        return Applied("credentials", Change.DELETED, "account closed" if closed else "revoked")

    async def ensure_bootstrap_secret(self, user_id: str, present: bool) -> Applied:
        """The agent's bootstrap: NATS URLs, CA, user id and its MT5-password key; the
        credentials are added by ensure_credentials. Deleted with the user."""
        name = bootstrap_secret_name(user_id)
        stored = await self.secrets.get(name)
        if not present:
            return Applied(f"secret {name}", await self.secrets.delete(name))
        data = dict(stored or {})
        data.setdefault(AGENT_KEY_KEY, mt5_credentials.generate_key().encode())
        data[BOOTSTRAP_KEY] = json.dumps({"user_id": user_id, "nats_urls": list(self.connection.nats_urls),
                                          "inbox_prefix": f"_INBOX_{user_id}", "creds_file": CREDS_KEY,
                                          "tls_ca": CA_KEY if self.connection.ca_pem else ""},
                                         sort_keys=True).encode()
        if self.connection.ca_pem:
            data[CA_KEY] = self.connection.ca_pem
        return Applied(f"secret {name}", await self.secrets.put(name, data, {"mt5fleet.io/user": user_id}))

    async def sealed_password(self, user_id: str, login: int, server: str, password_ref: tuple[str, str],
                              current: SealedCredentials | None) -> SealedCredentials:
        """The MT5 password from the user's Secret, sealed under the agent's key; the
        existing ciphertext is kept when it still opens to the same password (sealing
        draws a fresh nonce, and a new ciphertext would look like a config change)."""
        secret_name, secret_key = password_ref
        source = await self.secrets.get(secret_name, wait_s=PASSWORD_WAIT_S)
        if source is None or secret_key not in source:
            raise LookupError(f"Secret {secret_name} has no key {secret_key!r} (the MT5 password)")
        password = mt5_credentials.Secret(source[secret_key].decode())
        stored = await self.secrets.get(bootstrap_secret_name(user_id)) or {}
        if AGENT_KEY_KEY not in stored:
            raise LookupError(f"Secret {bootstrap_secret_name(user_id)} has no agent key yet")
        key = mt5_credentials.AgentKey(base64.b64decode(stored[AGENT_KEY_KEY]), source="bootstrap secret")
        if current is not None and current.ciphertext and current.login == login and current.server == server:
            try:
                opened = mt5_credentials.unseal(mt5_credentials.from_credentials(current), key, login=login,
                                                server=server)
                if opened == password:
                    return current
            except mt5_credentials.CredentialError:
                pass  # another key or a changed password: seal anew
        sealed = mt5_credentials.seal(password, key, login=login, server=server)
        return SealedCredentials(login=login, server=server, nonce=sealed.nonce, ciphertext=sealed.ciphertext,
                                 key_id=sealed.key_id, algorithm=sealed.algorithm)

    async def current_config(self, user_id: str, now_ms: int) -> ClientConfig | None:
        """The user's entry, read as its readers read it; None when there is none or it is
        unreadable or invalid (drift: rewritten)."""
        raw = await _kv_get(await self._kv(), user_id)
        if raw is None:
            return None
        try:
            return validation.check_client_config(validation.decode(config_pb2.ClientConfig, raw), now_ms,
                                                  key=user_id)
        except validation.ValidationError as exc:
            log.warning("the tc-config entry of %s is unreadable (%s); it will be rewritten", user_id, exc)
            return None


async def _kv_get(kv: Any, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry.value or None


# ---------------------------------------------------------------------- worker pool
class Scaler(Protocol):
    """The adjustment-worker pool: a Deployment in a cluster, worker tasks in local mode."""

    async def replicas(self) -> int | None: ...

    async def scale(self, replicas: int) -> None: ...


async def ensure_worker_replicas(scaler: Scaler, replicas: int) -> Applied:
    current = await scaler.replicas()
    if current == replicas:
        return Applied("worker pool", Change.UNCHANGED, f"{replicas} replica(s)")
    await scaler.scale(replicas)
    return Applied("worker pool", Change.UPDATED, f"{current} -> {replicas} replica(s)")


class DeploymentScaler:
    """Scales the adjustment-worker Deployment through its scale subresource (the only
    write the operator's RBAC grants on Deployments)."""

    def __init__(self, apps_api: Any, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = apps_api, namespace, name

    async def replicas(self) -> int | None:
        scale = await asyncio.to_thread(self.api.read_namespaced_deployment_scale, self.name, self.namespace)
        # The API server omits replicas when it is 0 (omitempty): that is 0, not unknown.
        return (scale.spec.replicas if scale.spec else None) or 0

    async def scale(self, replicas: int) -> None:
        # A merge patch, said explicitly: the client's default content type for a dict body
        # differs between client versions (JSON patch, strategic merge).
        await asyncio.to_thread(self.api.patch_namespaced_deployment_scale, self.name, self.namespace,
                                {"spec": {"replicas": replicas}}, _content_type="application/merge-patch+json")
