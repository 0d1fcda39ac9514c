"""The agent's TOML settings: the example loads, every rule names its key path, secrets stay masked."""

from __future__ import annotations

import copy
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mt5fleet.client.adapters import config_file as config
from mt5fleet.client.adapters.config_file import load_settings, parse_settings
from mt5fleet.client.adapters.settings import AgentSettings, default_data_dir
from mt5fleet.client.core.settings import Backend, ConfigError
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.proto.runtime import sealing as credentials
from mt5fleet.proto.runtime.sealing import CredentialError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.toml"
MINIMAL: dict[str, Any] = {
    "user_id": "alice",
    "nats": {"servers": ["nats://127.0.0.1:4222"]},
    "mt5": {"backend": "simulated"},
}


def _with(changes: dict[str, Any]) -> dict[str, Any]:
    """MINIMAL with dotted keys set ("nats.servers": [...]); a value of DELETE removes the key."""
    raw = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *tables, last = dotted.split(".")
        target = raw
        for table in tables:
            target = target.setdefault(table, {})
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return raw


DELETE = object()


def _error(changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(_with(changes))
    return str(caught.value)


def test_the_example_config_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.user_id == "demo-trader"
    assert settings.mt5.backend is Backend.SIMULATED
    assert settings.nats.servers == ("nats://127.0.0.1:4222",)
    assert settings.nats.name == "mt5fleet-agent-demo-trader"
    assert settings.symbols.trading == ("EURUSD", "GBPUSD")
    assert settings.simulated.broker in BROKERS
    assert (settings.metrics.port, settings.status.port) == (9464, 8470)


def test_the_example_documents_every_key() -> None:
    # A key the example does not mention is a key no user will find.
    documented: dict[str, set[str]] = {"": set()}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        if header := re.match(r"^\[([\w.]+)\]", line):
            table = header.group(1)
            documented.setdefault(table, set())
        elif key := re.match(r"^#?\s*(\w+)\s*=", line):
            documented[table].add(key.group(1))
    schema = {
        "": {"user_id", "data_dir", "log_level"}, "nats": config._NATS_KEYS,
        **{table: {f.name for f in fields(cls)} for table, cls in (
            ("mt5", config.Mt5Settings), ("simulated", config.SimulatedSettings), ("intervals", config.Intervals),
            ("metrics", config.Endpoint), ("status", config.Endpoint), ("risk", config.LocalRiskLimits),
            ("health", config.HealthBudgets))},
        "symbols": {"trading", "monitoring"}, "symbols.symbol_map": {"EURUSD"},
    }
    assert documented == schema


def test_defaults_of_a_minimal_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = parse_settings(MINIMAL)
    assert (settings.intervals.prices_s, settings.intervals.account_s, settings.intervals.heartbeat_s) == (1, 60, 5)
    assert settings.metrics.host == settings.status.host == "127.0.0.1"
    assert settings.metrics.enabled and settings.status.enabled
    assert settings.nats.max_reconnect_attempts == -1  # an agent reconnects for ever
    assert settings.data_dir == tmp_path / "mt5fleet" / "agent" / "alice"
    assert settings.outbox_path.parent == settings.ledger_path.parent == settings.data_dir
    assert settings.outbox_path != settings.ledger_path
    assert settings.risk.max_deviation_points == 20 and settings.log_level == "INFO"


def test_default_data_dir_is_per_user_and_under_programdata_on_windows(tmp_path: Path) -> None:
    windows = default_data_dir("alice", platform="win32", environ={"PROGRAMDATA": r"C:\ProgramData"})
    assert windows == Path(r"C:\ProgramData") / "mt5fleet" / "agent" / "alice"
    linux = default_data_dir("bob", platform="linux", environ={"XDG_DATA_HOME": str(tmp_path)})
    assert linux == tmp_path / "mt5fleet" / "agent" / "bob"
    assert default_data_dir("bob", platform="linux", environ={}) == Path.home() / ".local/share/mt5fleet/agent/bob"


def test_values_are_normalised_and_typed() -> None:
    settings = parse_settings(_with({
        "mt5.backend": "MetaTrader5", "log_level": "debug", "intervals.prices_s": 2,
        "symbols.symbol_map": {"EURUSD": "EURUSD.m"}, "risk.allowed_symbols": ["EURUSD"],
        "metrics.port": 0, "health.prices_s": 90, "health.storage_s": 5,
    }))
    assert (settings.health.prices_s, settings.health.storage_s, settings.health.nats_s) == (90.0, 5.0, 30.0)
    assert settings.mt5.backend is Backend.METATRADER5 and settings.log_level == "DEBUG"
    assert settings.intervals.prices_s == 2.0 and isinstance(settings.intervals.prices_s, float)
    assert dict(settings.symbols.symbol_map) == {"EURUSD": "EURUSD.m"}
    assert not settings.metrics.enabled
    with pytest.raises(TypeError):
        settings.symbols.symbol_map["GBPUSD"] = "GBPUSD.m"  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.user_id = "mallory"  # type: ignore[misc]


# Each rule: the change, then the exact message (key path first).
RULES = [
    ({"user_id": DELETE}, "user_id: is required"),
    ({"user_id": "Alice"}, "user_id: user id 'Alice' is not a DNS label"),
    ({"nats.servers": DELETE}, "nats.servers: is required"),
    ({"nats.servers": []}, "nats.servers: needs at least one nats:// or tls:// URL"),
    ({"nats.servers": "nats://a:4222"}, "nats.servers: must be a list of strings"),
    ({"nats.servers": ["nats://a:4222", "http://x"]}, "nats.servers[1]: 'http://x' is not a nats:// or tls:// URL"),
    ({"nats.servers": ["tls://a:99999"]}, "nats.servers[0]: 'tls://a:99999' has an invalid port"),
    ({"nats.servers": ["nats://a", 4222]}, "nats.servers[1]: must be a string, got 4222"),
    ({"nats.tls_key": "k.pem"}, "nats.tls_key: needs nats.tls_cert"),
    ({"nats.creds_file": "/nonexistent/alice.creds"}, "nats.creds_file: /nonexistent/alice.creds: no such file"),
    ({"nats.reconnect_wait_s": 0}, "nats.reconnect_wait_s: must be a number > 0, got 0"),
    ({"mt5.backend": DELETE}, "mt5.backend: is required"),
    ({"mt5.backend": "wine"}, "mt5.backend: 'wine' is not one of metatrader5, simulated"),
    ({"mt5.login": -5}, "mt5.login: must be an integer > 0, got -5"),
    ({"mt5.login": "5012345"}, "mt5.login: must be an integer > 0, got '5012345'"),
    ({"mt5.server": ""}, "mt5.server: must be a non-empty string"),
    ({"mt5.key_env": "MY-KEY"}, "mt5.key_env: 'MY-KEY' is not a name"),
    ({"mt5.key_file": "/nonexistent/agent.key"}, "mt5.key_file: /nonexistent/agent.key: no such file"),
    ({"mt5.init_timeout_s": float("nan")}, "mt5.init_timeout_s: must be a number > 0, got nan"),
    ({"simulated.broker": ""}, "simulated.broker: must be a non-empty string"),
    ({"simulated.seed": -1}, "simulated.seed: must be an integer >= 0, got -1"),
    ({"simulated.time_acceleration": 0}, "simulated.time_acceleration: must be a number > 0, got 0"),
    ({"symbols.trading": ["EURUSD", "eurusd"]}, "symbols.trading[1]: symbol 'eurusd' is not a canonical symbol"),
    ({"symbols.monitoring": ["USDJPY", "USDJPY"]}, "symbols.monitoring[1]: USDJPY is listed twice"),
    ({"symbols.symbol_map": {"EURUSD.m": "EURUSD"}}, "symbols.symbol_map.EURUSD.m: symbol 'EURUSD.m' is not"),
    ({"symbols.symbol_map": {"EURUSD": " EURUSD.m"}}, "symbols.symbol_map.EURUSD: broker name must be a non-empty"),
    ({"symbols.symbol_map": ["EURUSD"]}, "symbols.symbol_map: must be a table"),
    ({"intervals.prices_s": 0}, "intervals.prices_s: must be a number > 0, got 0"),
    ({"health.prices_s": 0}, "health.prices_s: must be a number > 0, got 0"),
    ({"health.storage_s": -1}, "health.storage_s: must be a number >= 0 (0: no cap), got -1"),
    ({"health.nats": 30}, "health.nats: unknown key"),
    ({"intervals.account_s": -60}, "intervals.account_s: must be a number > 0, got -60"),
    ({"intervals.heartbeat_s": "5"}, "intervals.heartbeat_s: must be a number > 0, got '5'"),
    ({"intervals.symbols_refresh_s": True}, "intervals.symbols_refresh_s: must be a number > 0, got True"),
    ({"metrics.port": 70000}, "metrics.port: must be an integer from 0 (disabled) to 65535, got 70000"),
    ({"metrics.port": True}, "metrics.port: must be an integer from 0 (disabled) to 65535, got True"),
    ({"metrics.host": "127.0.0.1:9464"}, "metrics.host: '127.0.0.1:9464' is not a host name or IP address"),
    ({"status.port": 9464}, "status.port: 9464 is already metrics.port on 127.0.0.1"),
    ({"status.port": 8470.5}, "status.port: must be an integer from 0 (disabled) to 65535, got 8470.5"),
    ({"risk.max_risk_per_trade_pct": 0}, "risk.max_risk_per_trade_pct: must be a number > 0 and <= 100"),
    ({"risk.max_risk_per_trade_pct": 150}, "risk.max_risk_per_trade_pct: must be a number > 0 and <= 100"),
    ({"risk.max_daily_loss": -1}, "risk.max_daily_loss: must be a number >= 0 (0: no cap), got -1"),
    ({"risk.max_drawdown": 20}, "risk.max_drawdown: must be a number >= 0 and < 1 (a fraction of peak equity"),
    ({"risk.max_open_positions": 2.5}, "risk.max_open_positions: must be an integer >= 0 (0: no cap), got 2.5"),
    ({"risk.max_spread_points": -3}, "risk.max_spread_points: must be an integer >= 0"),
    ({"risk.max_deviation_points": -1}, "risk.max_deviation_points: must be an integer >= 0"),
    ({"risk.allowed_symbols": ["EUR/USD"]}, "risk.allowed_symbols[0]: symbol 'EUR/USD' is not a canonical symbol"),
    ({"log_level": "verbose"}, "log_level: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"risk": 5}, "risk: must be a table, got int"),
]


@pytest.mark.parametrize("changes, message", RULES, ids=[next(iter(c)) + f"={list(c.values())[0]!r}"
                                                         for c, _ in RULES])
def test_each_rule_names_the_key_path(changes: dict[str, Any], message: str) -> None:
    assert _error(changes).startswith(message)


@pytest.mark.parametrize("changes, message", [
    ({"nats.server": ["nats://x"]}, "nats.server: unknown key (did you mean 'servers'?)"),
    ({"risk.max_drawdown_pct": 0.2}, "risk.max_drawdown_pct: unknown key (did you mean 'max_drawdown'?)"),
    ({"userid": "alice"}, "userid: unknown key (did you mean 'user_id'?)"),
    ({"symbols.symbol_map.EURUSD": "EURUSD.m", "symbols.map": {}}, "symbols.map: unknown key"),
    ({"telemetry": {}}, "telemetry: unknown key (known keys: data_dir, health, intervals, log_level, metrics, mt5"),
])
def test_unknown_keys_are_errors(changes: dict[str, Any], message: str) -> None:
    assert _error(changes).startswith(message)


def test_an_unknown_key_is_reported_before_the_default_would_hide_it() -> None:
    # The typo'd key would otherwise leave nats.servers "required": the typo is the real problem.
    assert _error({"nats.servers": DELETE, "nats.server": ["nats://x"]}).startswith("nats.server: unknown key")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    (folder / "alice.creds").write_text("creds")
    (folder / "agent.toml").write_text(
        'user_id = "alice"\ndata_dir = "state"\n[nats]\nservers = ["tls://nats.example.com:4222"]\n'
        'creds_file = "alice.creds"\n[mt5]\nbackend = "simulated"\n'
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    settings = load_settings(folder / "agent.toml")
    assert settings.nats.creds_file == str(folder / "alice.creds")
    assert settings.data_dir == folder / "state"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent.toml: cannot be read"):
        load_settings(tmp_path / "agent.toml")
    (tmp_path / "agent.toml").write_text("user_id = alice\n")
    with pytest.raises(ConfigError, match="agent.toml: not valid TOML"):
        load_settings(tmp_path / "agent.toml")


# ------------------------------------------------------------------ the sealed password

PASSWORD = "Tr4der-P@ss!word"


@pytest.fixture
def sealed_config(tmp_path: Path) -> tuple[dict[str, Any], str]:
    key_file = tmp_path / "agent.key"
    key_file.write_text(credentials.generate_key())
    key = credentials.load_key(key_file)
    text = credentials.to_text(credentials.seal(PASSWORD, key, login=5012345, server="Broker-Demo"))
    raw = _with({"mt5.login": 5012345, "mt5.server": "Broker-Demo", "mt5.password": text,
                 "mt5.key_file": str(key_file)})
    return raw, text


def test_the_sealed_password_unseals_with_the_configured_key(sealed_config: tuple[dict[str, Any], str]) -> None:
    raw, _ = sealed_config
    settings = parse_settings(raw)
    assert settings.mt5.unseal_password().reveal() == PASSWORD
    assert parse_settings(MINIMAL).mt5.unseal_password() is None


def test_a_password_moved_to_another_account_does_not_unseal(sealed_config: tuple[dict[str, Any], str]) -> None:
    raw, _ = sealed_config
    raw["mt5"]["login"] = 5099999
    with pytest.raises(CredentialError, match="another login or server"):
        parse_settings(raw).mt5.unseal_password()


def test_settings_repr_reveals_no_secret(sealed_config: tuple[dict[str, Any], str]) -> None:
    raw, text = sealed_config
    settings = parse_settings(raw)
    key_text = Path(raw["mt5"]["key_file"]).read_text().strip()
    rendered = [repr(settings), str(settings), repr(settings.mt5), f"{settings}", repr(settings.mt5.unseal_password())]
    for piece in (text, *text.split(":")[2:], key_text, PASSWORD):
        assert all(piece not in r for r in rendered), piece
    assert settings.mt5.password is not None and settings.mt5.password.key_id in repr(settings)


def test_a_plain_password_in_the_config_is_refused_without_echoing_it() -> None:
    message = _error({"mt5.login": 5012345, "mt5.server": "Broker-Demo", "mt5.password": PASSWORD})
    assert message.startswith("mt5.password: not a sealed password")
    assert PASSWORD not in message


def test_a_password_needs_the_account_it_is_sealed_for(sealed_config: tuple[dict[str, Any], str]) -> None:
    raw, _ = sealed_config
    del raw["mt5"]["server"]
    with pytest.raises(ConfigError, match=r"^mt5\.password: needs mt5\.login and mt5\.server"):
        parse_settings(raw)


def test_credentials_in_a_nats_url_are_refused_without_echoing_them() -> None:
    message = _error({"nats.servers": ["nats://alice:hunter2@nats.example.com:4222"]})
    assert message.startswith("nats.servers[0]: user or password in the URL")
    assert "hunter2" not in message


def test_an_agent_key_from_the_environment(sealed_config: tuple[dict[str, Any], str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = sealed_config
    key_file = raw["mt5"].pop("key_file")
    raw["mt5"]["key_env"] = "ALICE_AGENT_KEY"
    monkeypatch.setenv("ALICE_AGENT_KEY", Path(key_file).read_text())
    assert parse_settings(raw).mt5.unseal_password().reveal() == PASSWORD
    monkeypatch.delenv("ALICE_AGENT_KEY")
    with pytest.raises(CredentialError, match="ALICE_AGENT_KEY is not set"):
        parse_settings(raw).mt5.unseal_password()


def test_settings_is_one_frozen_object() -> None:
    settings = parse_settings(MINIMAL)
    assert isinstance(settings, AgentSettings)
    for nested in (settings, settings.nats, settings.mt5, settings.intervals, settings.risk, settings.symbols):
        assert type(nested).__dataclass_params__.frozen  # type: ignore[attr-defined]
