"""The Secrets of the operator's namespace, listed once and then watched (resuming from the
last resourceVersion seen; listed again only when the server says it is too old, 410), so
that a reconcile reads them from memory: no request per user and reconcile (issue 13:
~5 GETs per user and reconcile, ~830/s at 10,000 users).

Why all Secrets of the namespace, not only those with the operator's label: the users'
MT5-password Secrets are theirs, under any name and label their TradingClient refers to.
The operator's namespace is its own (deploy/rbac/operator-role.yaml), so that is its users'
Secrets and its own, and the Role grants list and watch there only.

Why aiohttp and not the official client's ``Watch``: that one blocks a thread on the
socket, which nothing can interrupt at shutdown. The connection settings (server, CA,
client certificate, bearer token with its refresh hook) are the official client's
``Configuration``, the one everything else in the operator uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from mt5fleet.operator.core.secret_cache import CachedSecret, SecretView

log = logging.getLogger("mt5fleet.operator.secrets")

WATCH_TIMEOUT_S = 300        # the server ends each watch after this; it is resumed at once
RETRY_S = (0.5, 1, 2, 5, 10)


class WatchExpired(Exception):
    """410 Gone: the resourceVersion is older than the server keeps; list again."""


def cached(body: Mapping[str, Any]) -> CachedSecret:
    """A Secret as the API server sends it (JSON) into the view: values decoded."""
    meta = body.get("metadata") or {}
    data = {key: base64.b64decode(value) for key, value in (body.get("data") or {}).items()}
    return CachedSecret(name=meta["name"], version=str(meta.get("resourceVersion", "")), data=data,
                        labels=dict(meta.get("labels") or {}))


class SecretInformer:
    def __init__(self, configuration: Any, namespace: str) -> None:
        self.configuration, self.namespace = configuration, namespace
        self.view = SecretView()
        self.version = ""                  # where the watch resumes
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        """Lists (the view is complete when this returns), then watches in the background."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl()),
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        try:
            await self._list()
        except BaseException:
            await self._session.close()
            raise
        self._task = asyncio.create_task(self._run(), name="secret-informer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ what the store uses
    def get(self, name: str) -> CachedSecret | None:
        return self.view.get(name)

    def wrote(self, body: Mapping[str, Any]) -> None:
        """Our write's response: readable at once, before its watch event."""
        self._notify(self.view.put(cached(body)))

    def deleted(self, name: str) -> None:
        """Our delete: gone at once (the last version we knew is the floor for stale events)."""
        known = self.view.get(name)
        if known is not None:
            self._notify(self.view.remove(name, known.version))

    async def changed_since(self, name: str, seen: CachedSecret | None, timeout_s: float) -> bool:
        """Waits until the view's ``name`` is no longer ``seen`` (a write refused as a conflict:
        someone else changed or deleted it, and the watch is about to say how)."""
        deadline = time.monotonic() + timeout_s
        while self.view.get(name) == seen:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return False
        return True

    # ------------------------------------------------------------------ list and watch
    def _notify(self, changed: bool) -> None:
        """Wakes whoever waits in ``changed_since`` (each waiter holds the Event of its time)."""
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if not self.version:
                    await self._list()
                await self._watch()
                failures = 0
            except WatchExpired:
                log.info("the Secrets watch expired at %s: listing again", self.version)
                self.version = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server away or restarting: resume from the same version
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning("watching Secrets in %s failed (%s: %s); again in %.1f s", self.namespace,
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        async with self._request({}) as response:
            body = await response.json()
        listed = [cached(item) for item in body.get("items") or ()]
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        self.view.replace(listed, version)
        self._notify(True)
        self.version = version
        log.info("%d Secret(s) in %s listed at version %s", len(listed), self.namespace, version)

    async def _watch(self) -> None:
        query = {"watch": "1", "resourceVersion": self.version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(WATCH_TIMEOUT_S)}
        async with self._request(query, read_timeout=WATCH_TIMEOUT_S + 30) as response:
            pending = b""
            async for chunk in response.content.iter_any():   # lines may exceed aiohttp's line limit
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(json.loads(line))

    def _event(self, event: Mapping[str, Any]) -> None:
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                raise WatchExpired(body.get("message", ""))
            raise RuntimeError(f"watch error {body.get('code')}: {body.get('message')}")
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        if kind in ("ADDED", "MODIFIED"):
            self._notify(self.view.put(cached(body)))
        elif kind == "DELETED":
            self._notify(self.view.remove(body["metadata"]["name"], version))
        if version:  # BOOKMARK included: only the version moves on
            self.version = version

    @contextlib.asynccontextmanager
    async def _request(self, query: dict[str, str], read_timeout: float = 60) -> AsyncIterator[aiohttp.ClientResponse]:
        url = f"{self.configuration.host.rstrip('/')}/api/v1/namespaces/{self.namespace}/secrets"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        assert self._session is not None, "start() first"
        async with self._session.get(url, params=query, headers=self._headers(), timeout=timeout,
                                     proxy=self.configuration.proxy or None) as response:
            if response.status == 410:
                raise WatchExpired(await response.text())
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status} from {url}: {(await response.text())[:300]}")
            yield response

    def _headers(self) -> dict[str, str]:
        """The client's own auth settings, read per request (its refresh hook renews a
        projected ServiceAccount token)."""
        headers = {"Accept": "application/json"}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def _ssl(self) -> ssl.SSLContext | bool:
        config = self.configuration
        if not config.host.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if not config.verify_ssl:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        return context
