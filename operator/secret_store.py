"""Where the operator keeps secrets: Kubernetes Secrets in a cluster, a private folder in
local mode. Both behind one small interface so the appliers never branch on which.

Values are bytes and never appear in logs or reprs; only names and key names do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from mt5fleet.operator.changes import Change

MANAGED_BY = {"app.kubernetes.io/managed-by": "mt5fleet-operator"}


class SecretStore(Protocol):
    async def get(self, name: str) -> dict[str, bytes] | None: ...

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change: ...

    async def delete(self, name: str) -> Change: ...


class DirectorySecretStore:
    """One JSON file per secret (base64 values), mode 0600 in a 0700 folder. Also reads
    ``Secret`` objects given to it at start (local mode's YAML files)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._given: dict[str, dict[str, bytes]] = {}

    def provide(self, name: str, data: Mapping[str, bytes]) -> None:
        """A Secret from the watched folder (read-only here: it is the user's file)."""
        self._given[name] = dict(data)

    def forget(self, name: str) -> None:
        self._given.pop(name, None)

    async def get(self, name: str) -> dict[str, bytes] | None:
        if name in self._given:
            return dict(self._given[name])
        path = self._path(name)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return {key: base64.b64decode(value) for key, value in raw["data"].items()}

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change:
        current = await self.get(name)
        if current == dict(data):
            return Change.UNCHANGED
        path = self._path(name)
        body = {"labels": dict(labels or {}), "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, sort_keys=True)
        temporary.replace(path)
        return Change.CREATED if current is None else Change.UPDATED

    async def delete(self, name: str) -> Change:
        path = self._path(name)
        if not path.exists():
            return Change.UNCHANGED
        path.unlink()
        return Change.DELETED

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"not a secret name: {name!r}")
        return self.root / f"{name}.json"


class KubernetesSecretStore:
    """Secrets of one namespace through the official client (run in a thread: the client
    is synchronous). NotFound on delete counts as done."""

    def __init__(self, core_api: Any, namespace: str) -> None:
        self.api, self.namespace = core_api, namespace

    async def get(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = await asyncio.to_thread(self.api.read_namespaced_secret, name, self.namespace)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    async def put(self, name: str, data: Mapping[str, bytes], labels: Mapping[str, str] | None = None) -> Change:
        current = await self.get(name)
        if current == dict(data):
            return Change.UNCHANGED
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": self.namespace, "labels": {**MANAGED_BY, **(labels or {})}},
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}
        if current is None:
            await asyncio.to_thread(self.api.create_namespaced_secret, self.namespace, body)
            return Change.CREATED
        await asyncio.to_thread(self.api.replace_namespaced_secret, name, self.namespace, body)
        return Change.UPDATED

    async def delete(self, name: str) -> Change:
        try:
            await asyncio.to_thread(self.api.delete_namespaced_secret, name, self.namespace)
        except Exception as exc:
            if _status(exc) == 404:
                return Change.UNCHANGED
            raise
        return Change.DELETED


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)
