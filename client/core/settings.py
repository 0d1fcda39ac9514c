"""The agent's settings model: frozen dataclasses with their numeric rules on the fields
(``_num``), so schema and validation cannot drift apart. ``config`` parses TOML into them."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.sealing import SealedPassword, Secret

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_REQUIRED: Any = object()
# Rule name -> (test, how the error states it). Integer fields are those with an int default.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: v > 0, "> 0"),
    "cap": (lambda v: v >= 0, ">= 0 (0: no cap)"),
    "seed": (lambda v: v >= 0, ">= 0"),
    "percent": (lambda v: 0 < v <= 100, "> 0 and <= 100 (percent of equity)"),
    "fraction": (lambda v: 0 <= v < 1, ">= 0 and < 1 (a fraction of peak equity: 0.2 is 20 %)"),
    "port": (lambda v: 0 <= v <= 65535, "from 0 (disabled) to 65535"),
}


def _num(default: float, rule: str) -> Any:
    return field(default=default, metadata={"rule": rule})


class ConfigError(ValueError):
    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(f"{key_path}: {problem}")
        self.key_path = key_path
        self.problem = problem


class Backend(enum.StrEnum):
    METATRADER5 = "metatrader5"   # the real MetaTrader5 package (Windows, beside the terminal)
    SIMULATED = "simulated"       # mt5fleet.client.sim, everywhere


@dataclass(frozen=True)
class Mt5Settings:
    backend: Backend
    terminal_path: str | None = None
    login: int | None = None
    server: str | None = None
    password: SealedPassword | None = None   # sealed; its repr shows only the key id
    key_file: str | None = None
    key_env: str = credentials.KEY_ENV_VAR
    init_timeout_s: float = _num(60.0, "positive")

    def unseal_password(self) -> Secret | None:
        """The plain password, for the MT5 login only; None when none is configured."""
        if self.password is None or self.login is None or self.server is None:
            return None
        key = credentials.load_key(self.key_file, self.key_env)
        return credentials.unseal(self.password, key, login=self.login, server=self.server)


@dataclass(frozen=True)
class SimulatedSettings:
    broker: str = "icm-raw"                       # a preset of mt5fleet.client.sim.broker.BROKERS
    seed: int = _num(1, "seed")
    time_acceleration: float = _num(1.0, "positive")


@dataclass(frozen=True)
class SymbolSettings:
    """Used until the operator's ClientConfig arrives; canonical names throughout."""

    trading: tuple[str, ...] = ()
    monitoring: tuple[str, ...] = ()
    symbol_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Intervals:
    prices_s: float = _num(1.0, "positive")
    account_s: float = _num(60.0, "positive")
    heartbeat_s: float = _num(5.0, "positive")
    symbols_refresh_s: float = _num(300.0, "positive")


@dataclass(frozen=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = _num(0, "port")                   # 0: disabled

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True)
class LocalRiskLimits:
    """Local fallbacks, applied where the server's ClientConfig leaves a limit unset. 0 = no cap."""

    max_risk_per_trade_pct: float = _num(2.0, "percent")
    max_daily_loss: float = _num(0.0, "cap")      # account currency
    max_drawdown: float = _num(0.3, "fraction")   # of peak equity
    max_open_positions: int = _num(10, "cap")
    max_spread_points: int = _num(0, "cap")
    max_deviation_points: int = _num(20, "cap")
    allowed_symbols: tuple[str, ...] = ()         # empty: the effective trading symbols


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
    log_level: str = "INFO"

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"


def default_data_dir(user_id: str, *, platform: str = sys.platform, environ: Mapping[str, str] = os.environ) -> Path:
    """%PROGRAMDATA%\\mt5fleet\\agent\\<uid> on Windows (a service has no useful home),
    else $XDG_DATA_HOME (or ~/.local/share)/mt5fleet/agent/<uid>: one folder per user id."""
    if platform == "win32" and environ.get("PROGRAMDATA"):
        base = Path(environ["PROGRAMDATA"])
    else:
        base = Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "mt5fleet" / "agent" / user_id
