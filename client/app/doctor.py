"""``mt5fleet agent doctor``: check, before running the agent (or beside it), everything it
needs, and say in plain words what to fix: the data folder (outbox) writable, the terminal
reachable and logged in, algo trading on, the broker's symbols mapped, the clock, each NATS
URL reachable with TLS, and the credentials accepted by the server (not revoked)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from mt5fleet.client.adapters.settings import AgentSettings
from mt5fleet.client.adapters.terminal import Mt5Login, Terminal, TerminalError, discover_symbol_map
from mt5fleet.client.core import doctor
from mt5fleet.client.core.doctor import Finding
from mt5fleet.proto.runtime import natsconn


async def examine(settings: AgentSettings, api: Any, *, host_ms: Callable[[], int] | None = None) -> list[Finding]:
    host_ms = host_ms or (lambda: int(time.time() * 1000))
    findings = [check_outbox(settings)]
    findings += await asyncio.to_thread(check_terminal, settings, api, host_ms)
    findings += await check_nats(settings)
    return findings


def check_outbox(settings: AgentSettings) -> Finding:
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".doctor-{uuid.uuid4().hex}"
        with open(probe, "wb") as out:
            out.write(b"probe")
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()
    except OSError as exc:
        return doctor.outbox(False, str(folder), str(exc))
    return doctor.outbox(True, str(folder))


def check_terminal(settings: AgentSettings, api: Any, host_ms: Callable[[], int]) -> list[Finding]:
    mt5 = settings.mt5
    login = Mt5Login(login=mt5.login, password=mt5.unseal_password(), server=mt5.server, path=mt5.terminal_path,
                     timeout_ms=int(mt5.init_timeout_s * 1000))
    terminal = Terminal(api, login)
    try:
        terminal.connect()
        info, account = terminal.terminal_info(), terminal.account_info()
    except TerminalError as exc:
        return [doctor.terminal(False, False, str(exc))]
    try:
        logged_in = bool(info.connected and account is not None and account.login)
        found = [doctor.terminal(True, logged_in, account=f"login {account.login} on {account.server}")]
        if not logged_in:
            return found
        found.append(doctor.algo_trading(bool(info.trade_allowed), bool(account.trade_expert)))
        wanted = tuple(dict.fromkeys(settings.symbols.trading + settings.symbols.monitoring))
        mapping = discover_symbol_map(wanted, terminal.broker_symbols(), dict(settings.symbols.symbol_map))
        found.append(doctor.symbols(wanted, mapping))
        found.append(doctor.clock(_skew(api, mapping.values(), host_ms)))
        return found
    finally:
        terminal.shutdown()


def _skew(api: Any, broker_symbols: Any, host_ms: Callable[[], int]) -> float | None:
    """From the freshest tick (server time); none fresh within a minute: not measured."""
    ticks = [api.symbol_info_tick(name) for name in broker_symbols]
    times = [t.time_msc for t in ticks if t is not None and t.time_msc]
    if not times:
        return None
    now = host_ms()
    skew = doctor.skew_against_server_time(now, max(times))
    # A tick a minute old says nothing about the clock (closed market): whole half-hours apart.
    return skew if abs(skew) < 60 else None


async def check_nats(settings: AgentSettings) -> list[Finding]:
    nats = settings.nats
    found = []
    for url in nats.servers:
        found.append(await _reach(url, nats.ssl_context(), nats.connect_timeout_s))
    one_shot = natsconn.NatsSettings(servers=nats.servers, name=f"mt5fleet-doctor-{settings.user_id}",
                                     creds_file=nats.creds_file, tls_ca=nats.tls_ca, tls_cert=nats.tls_cert,
                                     tls_key=nats.tls_key, connect_timeout_s=nats.connect_timeout_s, reconnect=False,
                                     max_reconnect_attempts=1)  # 0 would retry the first connect for ever
    errors: list[str] = []

    async def note(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)

    try:
        client = await asyncio.wait_for(natsconn.connect(one_shot, error_cb=note),
                                        nats.connect_timeout_s * (len(nats.servers) + 1))
    except Exception as exc:  # refused or unreachable: the server's word is the finding
        found.append(doctor.credentials(False, "; ".join(errors) or str(exc) or type(exc).__name__))
        return found
    await client.close()
    found.append(doctor.credentials(True, expires_in_s=_expires_in(nats.creds_file)))
    return found


async def _reach(url: str, context: ssl.SSLContext | None, timeout_s: float) -> Finding:
    parsed = urlparse(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.hostname, parsed.port or 4222), timeout_s)
    except (OSError, TimeoutError) as exc:
        return doctor.nats_url(url, False, False, str(exc) or type(exc).__name__)
    writer.close()
    # NATS starts in plain text and upgrades after its INFO: the client's TLS setting is what counts.
    return doctor.nats_url(url, True, context is not None)


def _expires_in(creds_file: str | None) -> float | None:
    """Seconds until the user JWT in the creds file expires (None: it does not)."""
    if not creds_file:
        return None
    try:
        text = open(creds_file, encoding="utf-8").read()
        token = text.split("-----BEGIN NATS USER JWT-----")[1].split("------END NATS USER JWT------")[0].strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return None
    return claims["exp"] - time.time() if claims.get("exp") else None
