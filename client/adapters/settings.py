"""The agent's whole settings object, and the parts that hold I/O types: the NATS
connection settings and the MT5 login with its sealed password (unsealing reads the agent
key from a file or the environment). The pure parts live in ``mt5fleet.client.core.settings``;
``config_file`` parses TOML into all of them."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mt5fleet.client.core.health import HealthBudgets
from mt5fleet.client.core.settings import (
    Backend,
    Endpoint,
    Intervals,
    LocalRiskLimits,
    SimulatedSettings,
    SymbolSettings,
    rule_field,
)
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.sealing import SealedPassword, Secret


@dataclass(frozen=True)
class Mt5Settings:
    backend: Backend
    terminal_path: str | None = None
    login: int | None = None
    server: str | None = None
    password: SealedPassword | None = None   # sealed; its repr shows only the key id
    key_file: str | None = None
    key_env: str = credentials.KEY_ENV_VAR
    init_timeout_s: float = rule_field(60.0, "positive")

    def unseal_password(self) -> Secret | None:
        """The plain password, for the MT5 login only; None when none is configured."""
        if self.password is None or self.login is None or self.server is None:
            return None
        key = credentials.load_key(self.key_file, self.key_env)
        return credentials.unseal(self.password, key, login=self.login, server=self.server)


@dataclass(frozen=True)
class AgentSettings:
    user_id: str
    nats: NatsSettings
    mt5: Mt5Settings
    data_dir: Path
    simulated: SimulatedSettings = SimulatedSettings()
    symbols: SymbolSettings = SymbolSettings()
    intervals: Intervals = Intervals()
    metrics: Endpoint = Endpoint(port=9464)
    status: Endpoint = Endpoint(port=8470)
    risk: LocalRiskLimits = LocalRiskLimits()
    health: HealthBudgets = HealthBudgets()   # how long a failure may last before /readyz says so
    log_level: str = "INFO"

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def watermarks_path(self) -> Path:
        return self.data_dir / "watermarks.json"

    @property
    def server_time_path(self) -> Path:
        return self.data_dir / "server_time.json"

    @property
    def charts_path(self) -> Path:
        return self.data_dir / "charts.json"


def default_data_dir(user_id: str, *, platform: str = sys.platform, environ: Mapping[str, str] = os.environ) -> Path:
    """%PROGRAMDATA%\\mt5fleet\\agent\\<uid> on Windows (a service has no useful home),
    else $XDG_DATA_HOME (or ~/.local/share)/mt5fleet/agent/<uid>: one folder per user id."""
    if platform == "win32" and environ.get("PROGRAMDATA"):
        base = Path(environ["PROGRAMDATA"])
    else:
        base = Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "mt5fleet" / "agent" / user_id
