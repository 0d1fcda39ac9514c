"""Where the operator keeps secrets: Kubernetes Secrets in a cluster, a private folder in
local mode. Both behind one small interface so the appliers never branch on which.

Values are bytes and never appear in logs or reprs; only names and key names do.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mt5fleet.operator.core.changes import Change
from mt5fleet.operator.core.secret_cache import CachedSecret

if TYPE_CHECKING:
    from mt5fleet.operator.adapters.secret_informer import SecretInformer

MANAGED_BY = {"app.kubernetes.io/managed-by": "mt5fleet-operator"}
# How long a write refused because the cache was behind waits for the watch to catch up.
CATCH_UP_S = 5.0


class SecretStore(Protocol):
    async def get(self, name: str, *, wait_s: float = 0.0) -> dict[str, bytes] | None:
        """``wait_s``: how long a Secret that is not there yet may take to appear (one
        the user applied together with the TradingClient that names it)."""

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change: ...

    async def delete(self, name: str) -> Change: ...


class DirectorySecretStore:
    """Each secret a 0700 folder of 0600 files, one per key: the layout of a Secret mounted
    as a volume, so an agent can point ``creds_file`` at ``<root>/<secret>/user.creds``.
    Also reads ``Secret`` objects given to it (local mode's YAML files)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._given: dict[str, dict[str, bytes]] = {}

    def provide(self, name: str, data: Mapping[str, bytes]) -> None:
        """A Secret from the watched folder (read-only here: it is the user's file)."""
        self._given[name] = dict(data)

    def path(self, name: str, key: str | None = None) -> Path:
        if "/" in name or name.startswith(".") or (key is not None and ("/" in key or key.startswith("."))):
            raise ValueError(f"not a secret name or key: {name!r} {key!r}")
        return self.root / name if key is None else self.root / name / key

    async def get(self, name: str, *, wait_s: float = 0.0) -> dict[str, bytes] | None:
        if name in self._given:
            return dict(self._given[name])
        folder = self.path(name)
        if not folder.is_dir():
            return None
        return {item.name: item.read_bytes() for item in folder.iterdir() if not item.name.startswith(".")}

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change:
        current = await self.get(name)
        if current == dict(data):
            return Change.UNCHANGED
        self.path(name).mkdir(mode=0o700, exist_ok=True)
        for key, value in data.items():
            if current is None or current.get(key) != value:  # file creation is the cost: only what changed
                _write_private(self.path(name, key), value)
        for stale in set(current or {}) - set(data):
            self.path(name, stale).unlink(missing_ok=True)
        return Change.CREATED if current is None else Change.UPDATED

    async def delete(self, name: str) -> Change:
        folder = self.path(name)
        if not folder.is_dir():
            return Change.UNCHANGED
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
        return Change.DELETED


def _write_private(path: Path, value: bytes) -> None:
    """Replace atomically, so a reader (an agent reconnecting) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    temporary.replace(path)


class KubernetesSecretStore:
    """Secrets of one namespace through the official client (run in a thread: the client
    is synchronous). NotFound on delete counts as done.

    Reads come from ``cache`` (a watch-fed ``SecretInformer``: no request per read) when
    given, else one GET each. Writes always go to the API server; with a cache their
    response goes into it at once, since a reconcile reads back what it just wrote. A write
    refused because the cache was behind (409: changed or created meanwhile; 404: deleted)
    is tried once more after the watch has told what happened."""

    def __init__(self, core_api: Any, namespace: str, cache: SecretInformer | None = None) -> None:
        self.api, self.namespace, self.cache = core_api, namespace, cache

    async def get(self, name: str, *, wait_s: float = 0.0) -> dict[str, bytes] | None:
        secret = await self._read(name)
        if secret is None and self.cache is not None and wait_s > 0:
            # Created a moment ago, the watch may not have told yet: wait for it, not a resync.
            await self.cache.changed_since(name, None, wait_s)
            secret = await self._read(name)
        return None if secret is None else dict(secret.data)

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change:
        current = await self._read(name)
        try:
            return await self._write(name, data, labels, current)
        except Exception as exc:
            if self.cache is None or _status(exc) not in (404, 409) or \
                    not await self.cache.changed_since(name, current, CATCH_UP_S):
                raise
        return await self._write(name, data, labels, await self._read(name))

    async def _write(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None,
                     current: CachedSecret | None) -> Change:
        wanted = {**MANAGED_BY, **(labels or {})}
        if current is not None:
            # A put without labels (the credentials into the bootstrap Secret) keeps the
            # labels an earlier put or someone else set: a replace would drop them.
            kept = dict(current.labels)
            if dict(current.data) == dict(data) and kept.items() >= wanted.items():
                return Change.UNCHANGED
            wanted = {**kept, **wanted}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": self.namespace, "labels": wanted},
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}
        if current is None:
            self._wrote(await asyncio.to_thread(self.api.create_namespaced_secret, self.namespace, body))
            return Change.CREATED
        # The version read: a Secret changed since then is a conflict (retried), not overwritten.
        body["metadata"]["resourceVersion"] = current.version
        self._wrote(await asyncio.to_thread(self.api.replace_namespaced_secret, name, self.namespace, body))
        return Change.UPDATED

    async def _read(self, name: str) -> CachedSecret | None:
        if self.cache is not None:
            return self.cache.get(name)
        try:
            secret = await asyncio.to_thread(self.api.read_namespaced_secret, name, self.namespace)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        return CachedSecret(name=name, version=secret.metadata.resource_version or "", data=_decoded(secret),
                            labels=dict(secret.metadata.labels or {}))

    def _wrote(self, secret: Any) -> None:
        if self.cache is not None:
            self.cache.wrote(self.api.api_client.sanitize_for_serialization(secret))

    async def delete(self, name: str) -> Change:
        try:
            await asyncio.to_thread(self.api.delete_namespaced_secret, name, self.namespace)
        except Exception as exc:
            if _status(exc) != 404:
                raise
            change = Change.UNCHANGED
        else:
            change = Change.DELETED
        if self.cache is not None:
            self.cache.deleted(name)
        return change


def _decoded(secret: Any) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)
