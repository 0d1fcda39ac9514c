"""The pure part of the agent's settings: frozen dataclasses with their numeric rules on the
fields (``rule_field``), so schema and validation cannot drift apart. The settings that hold
I/O types (the NATS connection, the sealed MT5 password) and the whole ``AgentSettings``
live in ``mt5fleet.client.adapters.settings``; ``config_file`` parses TOML into both."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Rule name -> (test, how the error states it). Integer fields are those with an int default.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: v > 0, "> 0"),
    "cap": (lambda v: v >= 0, ">= 0 (0: no cap)"),
    "seed": (lambda v: v >= 0, ">= 0"),
    "percent": (lambda v: 0 < v <= 100, "> 0 and <= 100 (percent of equity)"),
    "fraction": (lambda v: 0 <= v < 1, ">= 0 and < 1 (a fraction of peak equity: 0.2 is 20 %)"),
    "port": (lambda v: 0 <= v <= 65535, "from 0 (disabled) to 65535"),
}


def rule_field(default: float, rule: str) -> Any:
    """A numeric field checked by ``RULES[rule]`` when the config file sets it."""
    return field(default=default, metadata={"rule": rule})


class ConfigError(ValueError):
    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(f"{key_path}: {problem}")
        self.key_path = key_path
        self.problem = problem


class Backend(enum.StrEnum):
    METATRADER5 = "metatrader5"   # the real MetaTrader5 package (Windows, beside the terminal)
    SIMULATED = "simulated"       # the simulated terminal, everywhere


@dataclass(frozen=True)
class SimulatedSettings:
    # A preset of the simulated terminal: the composition root that builds it checks the name.
    broker: str = "icm-raw"
    seed: int = rule_field(1, "seed")
    time_acceleration: float = rule_field(1.0, "positive")


@dataclass(frozen=True)
class SymbolSettings:
    """Used until the operator's ClientConfig arrives; canonical names throughout."""

    trading: tuple[str, ...] = ()
    monitoring: tuple[str, ...] = ()
    symbol_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Intervals:
    prices_s: float = rule_field(1.0, "positive")
    account_s: float = rule_field(60.0, "positive")
    heartbeat_s: float = rule_field(5.0, "positive")
    symbols_refresh_s: float = rule_field(300.0, "positive")


@dataclass(frozen=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = rule_field(0, "port")             # 0: disabled

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True)
class LocalRiskLimits:
    """Local fallbacks, applied where the server's ClientConfig leaves a limit unset. 0 = no cap."""

    max_risk_per_trade_pct: float = rule_field(2.0, "percent")
    max_daily_loss: float = rule_field(0.0, "cap")      # account currency
    max_drawdown: float = rule_field(0.3, "fraction")   # of peak equity
    max_open_positions: int = rule_field(10, "cap")
    max_spread_points: int = rule_field(0, "cap")
    max_deviation_points: int = rule_field(20, "cap")
    allowed_symbols: tuple[str, ...] = ()         # empty: the effective trading symbols
