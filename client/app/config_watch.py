"""The live ClientConfig: every version of this user's config applied as it is written, no
restart. Read once per change at the edge into the typed value (``check_client_config``,
under this agent's user id as the key), turned into what the agent enforces
(``EffectiveConfig``), and the sealed MT5 credentials handed to whoever logs in with them.

A plain subscription on the key's subject gets each put live; a direct get reads the
current value at start and after every reconnect (what was put meanwhile). Both are what
the tenant's account imports from the platform's (the key's subject, and the direct get of
that one key as a service import) and the user's NATS permissions grant: no consumer per agent.

The md symbols (``market_data_symbols``) are known only once the config has been read over
the current connection: after a reconnect the last one applied may predate a downgrade
made meanwhile, which the connection's new credentials no longer allow."""

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
    """Owns what the agent enforces now (``effective``) and says when the streamed symbols
    change, or the md symbols become known on a connection (``symbols_changed``)."""

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
        self._epoch = 0          # one per connection, and per nats-py reconnect
        self._read_in = -1       # the epoch the config was last read in

    @property
    def market_data_symbols(self) -> tuple[str, ...] | None:
        """The ``md.<symbol>`` the agent may read now; None until the config has been read
        over the current connection."""
        return self.effective.md_symbols if self._read_in == self._epoch else None

    def attach(self, nc: Any) -> None:
        """The connection to read the config over, new after a reconnect that needed one."""
        self._nc = nc
        self._epoch += 1

    def connection_lost(self) -> None:
        """Until ``load`` has read the config again, what was applied may be out of date."""
        self._epoch += 1

    async def watch(self, stop: asyncio.Event) -> None:
        await self._nc.subscribe(subjects.config_key_subject(self.user_id), cb=self._on_message)
        await self.load(stop)

    async def load(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            epoch = self._epoch
            try:
                message = await self._nc.jetstream().get_msg(
                    subjects.config_stream_name(), subject=subjects.config_key_subject(self.user_id), direct=True)
            except NotFoundError:
                self._read(epoch)  # no config written yet: the subscription will bring the first one
                return
            except Exception as exc:  # the bucket not there yet, or the connection is away
                log.debug("reading the config: %s", exc)
                await asyncio.sleep(2)
                continue
            if message.data and not _kv_deleted(message.headers):
                self.apply_raw(message.data)
            self._read(epoch)
            return

    def _read(self, epoch: int) -> None:
        """Read over this connection (unless it was lost meanwhile): the md symbols are known."""
        if epoch == self._epoch and self._read_in != epoch:
            self._read_in = epoch
            self.symbols_changed.set()

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
        changed_symbols = (new.streamed_symbols, new.md_symbols) != (self.effective.streamed_symbols,
                                                                     self.effective.md_symbols)
        self.effective = new
        log.info("configuration applied: tier %s, trading %s", new.tier, ", ".join(new.trading_symbols))
        if changed_symbols:
            self.symbols_changed.set()


def _kv_deleted(headers: Any) -> bool:
    """A KV delete or purge: a marker message, not a config (the operator deleted the user)."""
    return bool(headers) and headers.get("KV-Operation") in ("DEL", "PURGE")
