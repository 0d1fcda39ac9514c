"""The agent's settings: one TOML file into one frozen ``AgentSettings``, loaded once.

Every mistake is a ``ConfigError`` naming the key path and the problem
("nats.servers[1]: 'http://x' is not a nats:// or tls:// URL"); unknown keys are errors,
because a typo quietly replaced by a default is how a risk limit goes missing. Relative
paths are relative to the config file, not to the working directory (a Windows service
starts in System32). Numeric rules sit on the dataclass fields (``rule_field``), so schema
and validation cannot drift apart. ``examples/agent.toml`` documents every key.

``simulated.broker`` is only required to be a name here: the simulated terminal's presets
are the composition root's business (``mt5fleet.launcher.agent``), and production code
never imports the simulator.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from mt5fleet.client.adapters.settings import AgentSettings, Mt5Settings, default_data_dir
from mt5fleet.client.core.health import HealthBudgets
from mt5fleet.client.core.settings import (
    LOG_LEVELS,
    RULES,
    Backend,
    ConfigError,
    Endpoint,
    Intervals,
    LocalRiskLimits,
    SimulatedSettings,
    SymbolSettings,
)
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.sealing import CredentialError, SealedPassword
from mt5fleet.proto.subjects import InvalidName, check_symbol, check_user_id

_REQUIRED: Any = object()  # a key without a default: missing is an error


def load_settings(path: str | os.PathLike[str]) -> AgentSettings:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_settings(raw, base_dir=path.resolve().parent)


def parse_settings(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> AgentSettings:
    """``base_dir``: what relative paths are relative to (the config file's folder)."""
    root = _Section(raw, "", {"user_id", "data_dir", "log_level", *_TABLES}, base_dir)
    user_id = root.text("user_id", check=_named(check_user_id))
    metrics = _endpoint(root.section("metrics", Endpoint), AgentSettings.metrics.port)
    status = _endpoint(root.section("status", Endpoint), AgentSettings.status.port)
    if status.enabled and (status.host, status.port) == (metrics.host, metrics.port):
        raise ConfigError("status.port", f"{status.port} is already metrics.port on {status.host}")
    data_dir = root.path("data_dir")
    return AgentSettings(
        user_id=user_id,
        nats=_nats(root.section("nats", _NATS_KEYS), user_id),
        mt5=_mt5(root.section("mt5", Mt5Settings)),
        data_dir=Path(data_dir) if data_dir else default_data_dir(user_id),
        simulated=_simulated(root.section("simulated", SimulatedSettings)),
        symbols=_symbols(root.section("symbols", SymbolSettings)),
        intervals=Intervals(**root.section("intervals", Intervals).numbers(Intervals)),
        metrics=metrics,
        status=status,
        risk=_risk(root.section("risk", LocalRiskLimits)),
        health=HealthBudgets(**root.section("health", HealthBudgets).numbers(HealthBudgets)),
        log_level=root.text("log_level", "INFO", check=_choice(LOG_LEVELS, str.upper)).upper(),
    )


# ------------------------------------------------------------------ sections

_TABLES = ("nats", "mt5", "simulated", "symbols", "intervals", "metrics", "status", "risk", "health")
_NATS_KEYS = {"servers", "creds_file", "tls_ca", "tls_cert", "tls_key", "connect_timeout_s", "reconnect_wait_s",
              "ping_interval_s"}


def _nats(s: _Section, user_id: str) -> NatsSettings:
    servers = s.strings("servers")
    if not servers:
        raise ConfigError(s.key("servers"), "needs at least one nats:// or tls:// URL")
    for index, url in enumerate(servers):
        _check_url(f"{s.key('servers')}[{index}]", url)
    if "tls_key" in s.data and "tls_cert" not in s.data:
        raise ConfigError(s.key("tls_key"), f"needs {s.key('tls_cert')}, the certificate it belongs to")
    positive = RULES["positive"]
    return NatsSettings(
        servers=tuple(servers),
        name=f"mt5fleet-agent-{user_id}",
        **{name: s.path(name, must_exist=True) for name in ("creds_file", "tls_ca", "tls_cert", "tls_key")},
        **{name: s.number(name, getattr(NatsSettings, name), *positive)
           for name in ("connect_timeout_s", "reconnect_wait_s", "ping_interval_s")},
    )


def _check_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.username or parts.password:
        # Never quote it: the URL holds a password, and this message goes to logs.
        raise ConfigError(key, "user or password in the URL would end up in logs; use nats.creds_file")
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ConfigError(key, f"{url!r} is not a nats:// or tls:// URL")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise ConfigError(key, f"{url!r} has an invalid port") from None


def _mt5(s: _Section) -> Mt5Settings:
    login = s.number("login", None, *RULES["positive"], integer=True)
    server = s.text("server", None)
    password = _sealed_password(s)
    if password is not None and (login is None or server is None):
        raise ConfigError(s.key("password"), "needs mt5.login and mt5.server: it is sealed for that account")
    backends = tuple(b.value for b in Backend)
    return Mt5Settings(
        backend=Backend(s.text("backend", check=_choice(backends, str.lower)).lower()),
        terminal_path=s.text("terminal_path", None), login=login, server=server, password=password,
        key_file=s.path("key_file", must_exist=True),
        key_env=s.text("key_env", credentials.KEY_ENV_VAR, check=_matches(r"[A-Za-z_][A-Za-z0-9_]*", "a name")),
        **s.numbers(Mt5Settings),
    )


def _sealed_password(s: _Section) -> SealedPassword | None:
    value = s.data.get("password")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(s.key("password"), "must be a string (the sealed text)")
    try:
        return credentials.from_text(value)  # its errors never quote the value: it may be a plain password
    except CredentialError as exc:
        raise ConfigError(s.key("password"), str(exc)) from None


def _simulated(s: _Section) -> SimulatedSettings:
    return SimulatedSettings(broker=s.text("broker", SimulatedSettings.broker), **s.numbers(SimulatedSettings))


def _symbols(s: _Section) -> SymbolSettings:
    mapping = s.data.get("symbol_map", {})
    if not isinstance(mapping, Mapping):
        raise ConfigError(s.key("symbol_map"), "must be a table of canonical symbol = \"broker name\"")
    for canonical, broker_name in mapping.items():
        key = f"{s.key('symbol_map')}.{canonical}"
        _named(check_symbol)(key, canonical)
        if not isinstance(broker_name, str) or not broker_name or broker_name != broker_name.strip():
            raise ConfigError(key, f"broker name must be a non-empty string without spaces, got {broker_name!r}")
    return SymbolSettings(trading=_symbol_list(s, "trading"), monitoring=_symbol_list(s, "monitoring"),
                          symbol_map=MappingProxyType(dict(mapping)))


def _risk(s: _Section) -> LocalRiskLimits:
    return LocalRiskLimits(allowed_symbols=_symbol_list(s, "allowed_symbols"), **s.numbers(LocalRiskLimits))


def _endpoint(s: _Section, default_port: int) -> Endpoint:
    return Endpoint(host=s.text("host", Endpoint.host, check=_host), **s.numbers(Endpoint, port=default_port))


def _symbol_list(s: _Section, name: str) -> tuple[str, ...]:
    symbols = s.strings(name, [])
    for index, symbol in enumerate(symbols):
        _named(check_symbol)(f"{s.key(name)}[{index}]", symbol)
        if symbol in symbols[:index]:
            raise ConfigError(f"{s.key(name)}[{index}]", f"{symbol} is listed twice")
    return tuple(symbols)


# ------------------------------------------------------------------ string checks: (key path, value) -> None

Check = Callable[[str, str], None]


def _named(checker: Callable[[str], str]) -> Check:
    """A subjects.check_* function, its InvalidName turned into a ConfigError at ``key``."""
    def check(key: str, value: str) -> None:
        try:
            checker(value)
        except InvalidName as exc:
            raise ConfigError(key, str(exc)) from None
    return check


def _choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> Check:
    def check(key: str, value: str) -> None:
        if normalize(value) not in choices:
            raise ConfigError(key, f"{value!r} is not one of {', '.join(choices)}")
    return check


def _matches(pattern: str, what: str) -> Check:
    def check(key: str, value: str) -> None:
        if not re.fullmatch(pattern, value):
            raise ConfigError(key, f"{value!r} is not {what}")
    return check


def _host(key: str, value: str) -> None:
    """A host name or a bare IP address: "127.0.0.1:9464" or "http://x" would fail only at bind time."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _matches(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", "a host name or IP address")(key, value)


# ------------------------------------------------------------------ reading TOML tables

class _Section:
    """One TOML table: unknown keys refused up front, typed reads with the key path in errors."""

    def __init__(self, data: Any, path: str, known: set[str] | type, base_dir: Path | None) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"must be a table, got {type(data).__name__}")
        self.known = known if isinstance(known, set) else {f.name for f in fields(known)}
        self.data, self.prefix, self.base_dir = data, path, base_dir
        for name in sorted(set(data) - self.known):
            close = difflib.get_close_matches(name, self.known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(self.known))}"
            raise ConfigError(self.key(name), f"unknown key ({hint})")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def section(self, name: str, known: set[str] | type) -> _Section:
        """The sub-table ``name``; its keys are ``known`` or the fields of the dataclass ``known``."""
        return _Section(self.data.get(name, {}), self.key(name), known, self.base_dir)

    def _value(self, name: str, default: Any) -> Any:
        if name not in self.data and default is _REQUIRED:
            raise ConfigError(self.key(name), "is required")
        return self.data.get(name, default)

    def text(self, name: str, default: Any = _REQUIRED, *, check: Check | None = None) -> Any:
        value = self._value(name, default)
        if name not in self.data:
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(name), f"must be a non-empty string, got {value!r}")
        if check is not None:
            check(self.key(name), value)
        return value

    def strings(self, name: str, default: Any = _REQUIRED) -> list[str]:
        values = self._value(name, default)
        if not isinstance(values, list):
            raise ConfigError(self.key(name), f"must be a list of strings, got {values!r}")
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(f"{self.key(name)}[{index}]", f"must be a string, got {value!r}")
        return values

    def number(self, name: str, default: Any, ok: Callable[[Any], bool], rule: str, *, integer: bool = False) -> Any:
        value = self._value(name, default)
        if name not in self.data:
            return value
        kind = "an integer" if integer else "a number"
        # bool is an int to Python, but `port = true` is a mistake, not port 1.
        valid_type = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
        if isinstance(value, bool) or not valid_type or not ok(value):
            raise ConfigError(self.key(name), f"must be {kind} {rule}, got {value!r}")
        return value if integer else float(value)

    def numbers(self, cls: type, **defaults: Any) -> dict[str, Any]:
        """Every field of the dataclass ``cls`` that has a ``rule_field`` rule, read from this table."""
        found = {}
        for f in fields(cls):
            if "rule" in f.metadata:
                default = defaults.get(f.name, f.default)
                found[f.name] = self.number(f.name, default, *RULES[f.metadata["rule"]], integer=type(default) is int)
        return found

    def path(self, name: str, *, must_exist: bool = False) -> str | None:
        """A path with ~ and environment variables expanded, relative to the config's folder."""
        value = self.text(name, None)
        if value is None:
            return None
        path = Path(os.path.expandvars(os.path.expanduser(value)))
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if must_exist and not path.is_file():
            raise ConfigError(self.key(name), f"{path}: no such file")
        return str(path)
