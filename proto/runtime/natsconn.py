"""How every mt5fleet process connects to NATS: several URLs, TLS, a credentials file.

One frozen settings object, built once per process; ``connect()`` turns it into a
nats-py connection that reconnects forever with backoff and fails over across servers.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client

Callback = Callable[..., Awaitable[None]]
log = logging.getLogger("mt5fleet.nats")


@dataclass(frozen=True)
class NatsSettings:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "mt5fleet"
    creds_file: str | None = None       # user JWT + NKey seed (the seed is a secret: never log it)
    tls_ca: str | None = None           # CA bundle that signed the server certificate
    tls_cert: str | None = None         # client certificate, where the server verifies clients
    tls_key: str | None = None
    connect_timeout_s: float = 5.0
    reconnect_wait_s: float = 1.0
    max_reconnect_attempts: int = -1    # forever: an agent must come back on its own
    reconnect: bool = True              # False for one-shot tools: fail at once instead
    ping_interval_s: float = 20.0

    def ssl_context(self) -> ssl.SSLContext | None:
        uses_tls = self.tls_ca or any(url.startswith("tls://") for url in self.servers)
        if not uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


async def connect(settings: NatsSettings, **callbacks: Any) -> Client:
    """Connect; ``callbacks`` are nats-py's (error_cb, disconnected_cb, reconnected_cb, ...)."""
    options: dict[str, Any] = {
        "servers": list(settings.servers),
        "name": settings.name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "max_reconnect_attempts": settings.max_reconnect_attempts,
        "allow_reconnect": settings.reconnect,
        "ping_interval": settings.ping_interval_s,
        "error_cb": _log_error,
        **callbacks,
    }
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file
    context = settings.ssl_context()
    if context is not None:
        options["tls"] = context
    return await nats.connect(**options)


async def _log_error(exc: Exception) -> None:
    # nats-py's default prints a traceback per failed attempt; one line says as much.
    log.warning("nats: %s: %s", type(exc).__name__, exc)
