"""The TradingClient resource as typed models: the one source of truth for its schema.

``crd.py`` generates the CRD's OpenAPI schema from these dataclasses and the constraints
attached to their fields; ``parse_spec`` reads a resource body against the same
constraints. In a cluster the API server has already checked them; in local mode (YAML
files in a folder) nothing has, so a malformed file is reported with every violation and
its field path, exactly as ``kubectl apply`` would have refused it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mt5fleet.proto import subjects

GROUP = "mt5fleet.io"
VERSION = "v1alpha1"
KIND = "TradingClient"
PLURAL = "tradingclients"
SINGULAR = "tradingclient"
SHORT_NAMES = ("tc",)
API_VERSION = f"{GROUP}/{VERSION}"

USER_ID_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SYMBOL_PATTERN = subjects.SYMBOL_RE.pattern
TIER_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
MAX_SYMBOLS = 64
# maxLength is the pattern's longest match, stated: the API server estimates a CEL rule's
# cost from it (an unbounded string would put the symbol rules over the cost budget).
SYMBOL_ITEMS = {"pattern": SYMBOL_PATTERN, "maxLength": 16}

SizingModeName = Literal["riskPercent", "fixedLot", "balanceMultiplier", "equityMultiplier"]
AccountTypeName = Literal["demo", "live"]


def spec_field(default: Any = dataclasses.MISSING, *, description: str, **schema: Any) -> Any:
    """A dataclass field with its OpenAPI constraints (``minimum``, ``maximum``,
    ``exclusiveMinimum``, ``pattern``, ``maxItems``, ``maxLength``, ``items``: the schema
    of each list item, ...) and description."""
    metadata = {"description": description, "schema": schema}
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        raise TypeError("use a tuple or a default_factory for collection defaults")
    return field(default=default, metadata=metadata)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True)
class SecretKeyRef:
    """Where the MT5 password lives: a key of a Secret in the TradingClient's namespace."""
    name: str = spec_field(description="Secret name", pattern=SECRET_NAME_PATTERN)
    key: str = spec_field("password", description="key within the Secret", maxLength=253)


@dataclass(frozen=True)
class BrokerSpec:
    name: str = spec_field(description="broker company, e.g. IC Markets", minLength=1, maxLength=128)
    server: str = spec_field(description="MT5 trade server, e.g. ICMarketsSC-Demo", minLength=1, maxLength=128)
    account_type: AccountTypeName = spec_field("demo", description="demo or live account")
    symbol_map: dict[str, str] = field(default_factory=dict, metadata={
        "description": "canonical symbol -> the broker's name for it, where discovery guesses wrong",
        "schema": {"maxProperties": MAX_SYMBOLS}})


@dataclass(frozen=True)
class AccountSpec:
    login: int = spec_field(description="MT5 account number", minimum=1)
    password_secret_ref: SecretKeyRef = spec_field(description="the Secret key holding the MT5 password")


@dataclass(frozen=True)
class SymbolsSpec:
    trading: tuple[str, ...] = spec_field(description="canonical symbols to trade, e.g. EURUSD",
                                          minItems=1, maxItems=MAX_SYMBOLS, items=SYMBOL_ITEMS)
    monitoring: tuple[str, ...] = spec_field((), description="canonical symbols streamed for context only",
                                             maxItems=MAX_SYMBOLS, items=SYMBOL_ITEMS)


@dataclass(frozen=True)
class RiskSpec:
    max_risk_per_trade: float = spec_field(1.0, description="percent of equity risked per trade",
                                           exclusiveMinimum=True, minimum=0, maximum=100)
    max_daily_loss: float = spec_field(0.0, description="loss per trading day that stops trading, "
                                       "account currency (0: no limit)", minimum=0)
    max_drawdown: float = spec_field(0.0, description="fraction of peak equity lost that stops trading, "
                                     "0-1 (0: no limit)", minimum=0, maximum=1)
    max_open_positions: int = spec_field(0, description="simultaneous positions (0: no limit)",
                                         minimum=0, maximum=1000)
    allowed_symbols: tuple[str, ...] = spec_field((), description="symbols the agent may trade (empty: "
                                                  "the effective trading symbols)", maxItems=MAX_SYMBOLS,
                                                  items=SYMBOL_ITEMS)
    allow_news_trading: bool = spec_field(False, description="trade around high-impact news")
    max_spread_points: int = spec_field(0, description="widest spread to open at, points (0: no cap)",
                                        minimum=0, maximum=100_000)
    max_lot: float = spec_field(0.0, description="largest position, lots (0: the broker's maximum)", minimum=0)
    max_deviation_points: int = spec_field(20, description="slippage allowed on market orders, points",
                                           minimum=0, maximum=10_000)


@dataclass(frozen=True)
class PreferencesSpec:
    preferred_lot_size: float = spec_field(0.01, description="lots, for the fixedLot sizing mode",
                                           exclusiveMinimum=True, minimum=0, maximum=1000)
    auto_close_friday: bool = spec_field(False, description="close all positions before the weekend")
    conservative_mode: bool = spec_field(False, description="halve the computed lot size")
    sizing_mode: SizingModeName = spec_field("riskPercent", description="how lot sizes are computed")
    sizing_value: float = spec_field(0.0, description="lots per 1,000 of balance or equity, for the "
                                     "multiplier sizing modes", minimum=0, maximum=1000)
    max_quote_age_ms: int = spec_field(2000, description="no command from a broker quote older than this, ms",
                                       minimum=100, maximum=600_000)
    max_signal_age_ms: int = spec_field(30_000, description="no command from a signal older than this, ms",
                                        minimum=100, maximum=3_600_000)


@dataclass(frozen=True)
class TradingClientSpec:
    user_id: str = spec_field(description="the user's id: a DNS label, also its NATS subject token",
                              pattern=USER_ID_PATTERN, maxLength=63)
    tier: str = spec_field(description="subscription tier: free, pro, enterprise or a custom tier name",
                           pattern=TIER_PATTERN)
    broker: BrokerSpec = spec_field(description="the broker and MT5 server")
    account: AccountSpec = spec_field(description="the MT5 account")
    symbols: SymbolsSpec = spec_field(description="symbols to trade and to monitor")
    risk: RiskSpec = field(default_factory=RiskSpec, metadata={"description": "risk limits", "schema": {}})
    preferences: PreferencesSpec = field(default_factory=PreferencesSpec,
                                         metadata={"description": "sizing and trading preferences", "schema": {}})
    paused: bool = spec_field(False, description="no new commands while true (open positions stay)")
    close_only: bool = spec_field(False, description="only closing and modifying commands while true")


# CEL rules of the CRD: the API server enforces them; check_rules() mirrors them for local mode.
CEL_RULES: tuple[tuple[str, str], ...] = (
    ("!has(self.symbols.monitoring) || self.symbols.monitoring.all(s, !(s in self.symbols.trading))",
     "monitoring symbols must not repeat trading symbols"),
    ("self.symbols.trading.all(s, self.symbols.trading.exists_one(t, t == s))",
     "trading symbols must not repeat"),
    ("!has(self.risk) || !has(self.risk.allowedSymbols) || self.risk.allowedSymbols.size() == 0 || "
     "self.risk.allowedSymbols.exists(s, s in self.symbols.trading)",
     "risk.allowedSymbols must include at least one trading symbol"),
)


@dataclass(frozen=True)
class TradingClient:
    """A resource as the operator sees it: identity, generation and the checked spec."""
    namespace: str
    name: str
    generation: int
    spec: TradingClientSpec
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class SpecError(ValueError):
    """A TradingClient body that the schema refuses; ``problems`` are "path: reason"."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_spec(body: Mapping[str, Any]) -> TradingClientSpec:
    problems: list[str] = []
    spec = _read(TradingClientSpec, body, "spec", problems)
    if spec is not None:
        problems.extend(check_rules(spec))
    if problems or spec is None:
        raise SpecError(problems or ["spec: missing"])
    return spec


def parse_resource(resource: Mapping[str, Any]) -> TradingClient:
    meta = resource.get("metadata") or {}
    if resource.get("kind", KIND) != KIND:
        raise SpecError([f"kind: expected {KIND}, got {resource.get('kind')!r}"])
    if not meta.get("name"):
        raise SpecError(["metadata.name: missing"])
    return TradingClient(namespace=meta.get("namespace") or "default", name=meta["name"],
                         generation=int(meta.get("generation") or 1), uid=meta.get("uid", ""),
                         spec=parse_spec(resource.get("spec") or {}))


def check_rules(spec: TradingClientSpec) -> list[str]:
    """The CEL rules, in Python (local mode has no API server to run them)."""
    problems = []
    repeated = sorted(set(spec.symbols.monitoring) & set(spec.symbols.trading))
    if repeated:
        problems.append(f"spec.symbols.monitoring: {', '.join(repeated)} already traded; {CEL_RULES[0][1]}")
    if len(set(spec.symbols.trading)) != len(spec.symbols.trading):
        problems.append(f"spec.symbols.trading: {CEL_RULES[1][1]}")
    if spec.risk.allowed_symbols and not set(spec.risk.allowed_symbols) & set(spec.symbols.trading):
        problems.append(f"spec.risk.allowedSymbols: {CEL_RULES[2][1]}")
    return problems


# ---------------------------------------------------------------------- generic reading
def _read(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: expected an object, got {type(data).__name__}")
        return None
    hints = _hints(cls)
    known = {camel(f.name) for f in dataclasses.fields(cls)}
    problems.extend(f"{path}.{key}: unknown field" for key in data if key not in known)
    values: dict[str, Any] = {}
    for spec_field_ in dataclasses.fields(cls):
        name = camel(spec_field_.name)
        where = f"{path}.{name}"
        if name not in data:
            if spec_field_.default is dataclasses.MISSING and spec_field_.default_factory is dataclasses.MISSING:
                problems.append(f"{where}: required")
            continue
        value = _value(hints[spec_field_.name], data[name], where, problems)
        if value is not None:
            schema = spec_field_.metadata.get("schema", {})
            problems.extend(_constraints(schema, value, where))
            if isinstance(value, tuple) and "items" in schema:
                for i, item in enumerate(value):
                    problems.extend(_constraints(schema["items"], item, f"{where}[{i}]"))
            values[spec_field_.name] = value
    try:
        return cls(**values)
    except TypeError:  # a required field was missing: already reported
        return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations costs more than reading a whole spec: once per class.
    return typing.get_type_hints(cls)


def _value(hint: Any, raw: Any, where: str, problems: list[str]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _read(hint, raw, where, problems)
    if origin is Literal:
        if raw not in args:
            problems.append(f"{where}: must be one of {', '.join(map(str, args))}, got {raw!r}")
            return None
        return raw
    if origin is tuple:
        if not isinstance(raw, list):
            problems.append(f"{where}: expected a list")
            return None
        items = [_value(args[0], item, f"{where}[{i}]", problems) for i, item in enumerate(raw)]
        return tuple(items) if None not in items else None
    if origin is dict:
        if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
            problems.append(f"{where}: expected a map of strings")
            return None
        return dict(raw)
    return _scalar(hint, raw, where, problems)


def _scalar(hint: Any, raw: Any, where: str, problems: list[str]) -> Any:
    if hint is bool:
        ok = isinstance(raw, bool)
    elif hint is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif hint is float:
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    elif hint is str:
        ok = isinstance(raw, str)
    else:  # pragma: no cover - a model type this reader does not know is a programming error
        raise TypeError(f"unsupported model type {hint!r} at {where}")
    if not ok:
        problems.append(f"{where}: expected {_TYPE_NAMES[hint]}, got {type(raw).__name__}")
        return None
    return raw


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _constraints(schema: Mapping[str, Any], value: Any, where: str) -> list[str]:
    problems = []
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low):
            problems.append(f"{where}: must be {'>' if schema.get('exclusiveMinimum') else '>='} {low}, got {value}")
        if high is not None and value > high:
            problems.append(f"{where}: must be <= {high}, got {value}")
    if isinstance(value, str):
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            what = "is not a canonical symbol (like EURUSD)" if schema["pattern"] == SYMBOL_PATTERN \
                else f"does not match {schema['pattern']}"
            problems.append(f"{where}: {value!r} {what}")
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: length must be {schema.get('minLength', 0)}..{schema.get('maxLength')}")
    if isinstance(value, tuple):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: must have {schema.get('minItems', 0)}..{schema.get('maxItems')} items, "
                            f"got {len(value)}")
    if isinstance(value, dict) and len(value) > schema.get("maxProperties", len(value)):
        problems.append(f"{where}: at most {schema['maxProperties']} entries")
    return problems

# ---------------------------------------------------------------------- status
PhaseName = Literal["Pending", "Provisioning", "Ready", "Degraded", "Paused", "Invalid", "Deleting"]
ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPES = ("Ready", "NatsProvisioned", "CredentialsIssued", "AgentConnected", "TierCompliant")


@dataclass(frozen=True)
class Condition:
    type: str = spec_field(description="one of " + ", ".join(CONDITION_TYPES), maxLength=64)
    status: ConditionStatus = spec_field(description="True, False or Unknown")
    reason: str = spec_field(description="CamelCase reason for the last transition", maxLength=128)
    last_transition_time: str = spec_field(description="when status last changed (RFC 3339)", format="date-time")
    message: str = spec_field("", description="what a human should know", maxLength=4096)
    observed_generation: int = spec_field(0, description="metadata.generation the condition was set from",
                                          minimum=0)


@dataclass(frozen=True)
class EffectiveSymbols:
    trading: tuple[str, ...] = spec_field((), description="symbols the user's commands may be for")
    correlation: tuple[str, ...] = spec_field((), description="symbols chosen by correlation analysis")
    monitoring: tuple[str, ...] = spec_field((), description="symbols streamed for context")


@dataclass(frozen=True)
class TradingClientStatus:
    phase: PhaseName = spec_field("Pending", description="summary of the conditions")
    observed_generation: int = spec_field(0, description="metadata.generation last reconciled", minimum=0)
    conditions: tuple[Condition, ...] = spec_field((), description="Ready, NatsProvisioned, CredentialsIssued, "
                                                   "AgentConnected, TierCompliant")
    effective_symbols: EffectiveSymbols = field(default_factory=EffectiveSymbols, metadata={
        "description": "symbols in effect under the tier's limits", "schema": {}})
    subjects: dict[str, str] = field(default_factory=dict, metadata={
        "description": "the user's NATS subjects by channel", "schema": {}})
    worker_shard: int = spec_field(0, description="adjustment-worker partition that owns the user", minimum=0)
    credentials_secret: str = spec_field("", description="Secret holding the agent's bootstrap (NATS URLs, "
                                         "credentials, CA)")
    agent_version: str = spec_field("", description="version the agent reported in its last heartbeat")
    last_heartbeat: str = spec_field("", description="time of the agent's last heartbeat (RFC 3339)")
    latency_ms: float = spec_field(0.0, description="agent-reported command latency, p50 ms", minimum=0)


def to_mapping(value: Any) -> Any:
    """A model as the camelCase JSON a resource carries (the inverse of the reader)."""
    if dataclasses.is_dataclass(value):
        return {camel(f.name): to_mapping(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_mapping(item) for item in value]
    if isinstance(value, dict):
        return {key: to_mapping(item) for key, item in value.items()}
    return value


def parse_status(body: Mapping[str, Any] | None) -> TradingClientStatus:
    """The status a resource carries; an unreadable one counts as none (it is rewritten)."""
    problems: list[str] = []
    status = _read(TradingClientStatus, body or {}, "status", problems)
    return status if status is not None and not problems else TradingClientStatus()
