"""The demo's users and market clock: which TradingClients it runs, which simulated broker
stands in for each trade server, and when its market day starts. Pure but for reading and
copying the example files.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.operator.core.admission import parse_resource
from mt5fleet.operator.core.models import TradingClient
from mt5fleet.proto.domain.sessions import NEW_YORK

EXAMPLES_ENV = "MT5FLEET_EXAMPLES"
EXAMPLE_FILES = ("alice-free.yaml", "bob-pro.yaml", "carol-pro-over-limit.yaml", "dave-enterprise.yaml")
EXAMPLE_SECRETS = "secrets.yaml"
MARKET_OPEN_HOUR = 10           # New York: the market is open and far from the 17:00 rollover
PRESET_BY_SERVER = {profile.server: name for name, profile in BROKERS.items()}
PRESETS = tuple(BROKERS)
# Generated users: a mix of tiers and each simulated broker in turn.
GENERATED_TIERS = ("free", "pro", "enterprise", "pro")
GENERATED_SYMBOLS = {
    "free": (("EURUSD", "GBPUSD"), ("USDJPY", "XAUUSD")),
    "pro": (("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "EURJPY"), ("USDCHF", "XAUUSD")),
    "enterprise": (("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "EURJPY", "AUDUSD"), ("USDCHF", "NZDUSD", "USDCAD")),
}


def market_clock_start(now: dt.datetime) -> float:
    """10:00 New York on today's date if it is a weekday, else on the Friday before (unix s)."""
    day = now.astimezone(NEW_YORK).date()
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(MARKET_OPEN_HOUR), NEW_YORK).timestamp()


def broker_preset(server: str) -> str:
    """The simulated broker (client/sim/broker.py) that stands in for an MT5 trade server."""
    try:
        return PRESET_BY_SERVER[server]
    except KeyError:
        raise ValueError(f"no simulated broker for server {server!r}; known: {', '.join(PRESET_BY_SERVER)}") from None


def generated_user(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """User number ``index`` (5 and up): its TradingClient and the Secret of its MT5 password."""
    user_id = f"user{index:03d}"
    tier, preset = GENERATED_TIERS[index % len(GENERATED_TIERS)], PRESETS[index % len(PRESETS)]
    broker = BROKERS[preset]
    login = broker.login + index
    trading, monitoring = GENERATED_SYMBOLS[tier]
    client = {
        "apiVersion": "mt5fleet.io/v1alpha1", "kind": "TradingClient", "metadata": {"name": user_id},
        "spec": {
            "userId": user_id, "tier": tier,
            "broker": {"name": broker.company, "server": broker.server, "accountType": "demo"},
            "account": {"login": login, "passwordSecretRef": {"name": f"mt5-{user_id}", "key": "password"}},
            "symbols": {"trading": list(trading), "monitoring": list(monitoring)},
            "risk": {"maxRiskPerTrade": 1.0, "maxOpenPositions": 4, "maxSpreadPoints": 60, "maxDrawdown": 0.3},
        },
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"mt5-{user_id}"}, "type": "Opaque",
              "stringData": {"password": f"demo-{preset}-{login}"}}
    return client, secret


def examples_folder() -> Path:
    """``$MT5FLEET_EXAMPLES``, else the checkout's ``examples/``."""
    folder = Path(os.environ.get(EXAMPLES_ENV) or Path(__file__).resolve().parents[2] / "examples")
    if not (folder / EXAMPLE_SECRETS).is_file():
        raise FileNotFoundError(f"the demo's TradingClients are not in {folder}: run it from a checkout "
                                f"or set {EXAMPLES_ENV} to a copy of examples/")
    return folder


def prepare_clients(folder: Path, users: int, examples: Path) -> None:
    """The operator's folder: the first ``users`` examples and their Secrets, then
    generated users up to ``users``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*EXAMPLE_FILES[:users], EXAMPLE_SECRETS):
        shutil.copy(examples / name, folder / name)
    generated = [generated_user(index) for index in range(len(EXAMPLE_FILES) + 1, users + 1)]
    if generated:
        (folder / "generated-users.yaml").write_text(yaml.safe_dump_all([c for c, _ in generated], sort_keys=False))
        (folder / "generated-secrets.yaml").write_text(yaml.safe_dump_all([s for _, s in generated], sort_keys=False))


def read_clients(folder: Path) -> list[TradingClient]:
    """The TradingClients of the folder, in file order."""
    clients = []
    for path in sorted(folder.glob("*.yaml")):
        for body in yaml.safe_load_all(path.read_text()):
            if isinstance(body, dict) and body.get("kind") == "TradingClient":
                clients.append(parse_resource(body))
    return clients
