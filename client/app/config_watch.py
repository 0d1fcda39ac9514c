"""The live ClientConfig: every version of this user's config applied as it is written, no
restart. Read once per change at the edge into the typed value (``check_client_config``,
under this agent's user id as the key), turned into what the agent enforces
(``EffectiveConfig``), and the sealed MT5 credentials handed to whoever logs in with them.

A plain subscription on the key's subject gets each put live; a direct get reads the
current value at start and after every reconnect (what was put meanwhile). Both are what
the user's NATS permissions grant: no consumer per agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.js.errors import NotFoundError

from mt5fleet.client.adapters.metrics import AgentMetrics
from mt5fleet.client.core import effective as effective_config
from mt5fleet.client.core.effective import EffectiveConfig
from mt5fleet.client.core.settings import LocalRiskLimits, SymbolSettings
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import Clock, now_ms
from mt5fleet.proto.domain.config import SealedCredentials
from mt5fleet.proto.v1 import config_pb2
from mt5fleet.proto.validation import ValidationError, check_client_config, decode

log = logging.getLogger("mt5fleet.agent.config")


class ConfigWatch:
    """Owns what the agent enforces now (``effective``) and says when the streamed symbols change."""

    def __init__(self, *, user_id: str, local_risk: LocalRiskLimits, local_symbols: SymbolSettings, clock: Clock,
                 metrics: AgentMetrics, on_credentials: Callable[[SealedCredentials], object]) -> None:
        self.user_id = user_id
        self.clock = clock
        self.metrics = metrics
        self.on_credentials = on_credentials
        self._local_risk, self._local_symbols = local_risk, local_symbols
        self.effective = effective_config.from_local_settings(local_risk, local_symbols)
        self.symbols_changed = asyncio.Event()
        self._nc: Any = None

    def attach(self, nc: Any) -> None:
        """The connection to read the config over, new after a reconnect that needed one."""
        self._nc = nc

    async def watch(self, stop: asyncio.Event) -> None:
        await self._nc.subscribe(subjects.config_key_subject(self.user_id), cb=self._on_message)
        await self.load(stop)

    async def load(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                message = await self._nc.jetstream().get_msg(
                    subjects.config_stream_name(), subject=subjects.config_key_subject(self.user_id), direct=True)
            except NotFoundError:
                return  # no config written yet: the subscription will bring the first one
            except Exception as exc:  # the bucket not there yet, or the connection is away
                log.debug("reading the config: %s", exc)
                await asyncio.sleep(2)
                continue
            if message.data and not _kv_deleted(message.headers):
                self.apply_raw(message.data)
            return

    async def _on_message(self, message: Any) -> None:
        if message.data and not _kv_deleted(message.headers):
            self.apply_raw(message.data)

    def apply_raw(self, raw: bytes) -> None:
        try:
            config = check_client_config(decode(config_pb2.ClientConfig, raw), now_ms(self.clock), key=self.user_id)
            new = effective_config.from_client_config(config, self._local_risk, self._local_symbols)
        except (ValidationError, ValueError) as exc:  # ValueError: limits RiskLimits refuses
            self.metrics.invalid.labels("ClientConfig").inc()
            log.warning("refused a ClientConfig: %s", exc)
            return
        self.apply(new)
        if config.credentials is not None:
            self.on_credentials(config.credentials)

    def apply(self, new: EffectiveConfig) -> None:
        changed_symbols = new.streamed_symbols != self.effective.streamed_symbols
        self.effective = new
        log.info("configuration applied: tier %s, trading %s", new.tier, ", ".join(new.trading_symbols))
        if changed_symbols:
            self.symbols_changed.set()


def _kv_deleted(headers: Any) -> bool:
    """A KV delete or purge: a marker message, not a config (the operator deleted the user)."""
    return bool(headers) and headers.get("KV-Operation") in ("DEL", "PURGE")
