"""The TradingClient resource as typed models: the one source of truth for its schema.

``crd.py`` generates the CRD (OpenAPI schema and CEL rules) from these dataclasses, the
constraints attached to their fields and ``CEL_RULES``. Bodies are checked against that
generated CRD, not against these classes: by the API server in a cluster, by
``admission.py`` (jsonschema and cel-python) in local mode; ``from_mapping`` then builds
the typed value from the checked, defaulted body.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mt5fleet.proto import subjects

# What the readers of ClientConfig accept: a spec the CRD admits must never be refused there.
from mt5fleet.proto.validation_rules import DEFAULT_LIMITS as WIRE

GROUP = "mt5fleet.io"
# A new value asks the operator for a new signing key on the tenant's NATS account.
ROTATE_SIGNING_KEY_ANNOTATION = f"{GROUP}/rotate-signing-key"
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

T = TypeVar("T")

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
                                       "account currency (0: no limit)", minimum=0, maximum=WIRE.max_amount)
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
    max_lot: float = spec_field(0.0, description="largest position, lots (0: the broker's maximum)", minimum=0,
                                maximum=WIRE.max_lot)
    max_deviation_points: int = spec_field(20, description="slippage allowed on market orders, points",
                                           minimum=0, maximum=10_000)


@dataclass(frozen=True)
class PreferencesSpec:
    preferred_lot_size: float = spec_field(0.01, description="lots, for the fixedLot sizing mode",
                                           exclusiveMinimum=True, minimum=0, maximum=WIRE.max_lot)
    auto_close_friday: bool = spec_field(False, description="close all positions before the weekend")
    conservative_mode: bool = spec_field(False, description="halve the computed lot size")
    sizing_mode: SizingModeName = spec_field("riskPercent", description="how lot sizes are computed")
    sizing_value: float = spec_field(0.0, description="lots per 1,000 USD of balance or equity "
                                     "(converted at the broker's quotes), for the multiplier sizing modes",
                                     minimum=0, maximum=1000)
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


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule the schema alone cannot state: an ``x-kubernetes-validations``
    entry of the spec. The API server evaluates it in a cluster, ``admission.py`` with
    cel-python in local mode; ``field_path`` (relative to the spec) names the field blamed,
    ``message_expression`` (CEL, optional) a message naming the culprit, ``reason`` how the
    server words the error (``FieldValueInvalid``: "Invalid value: <message>";
    ``FieldValueForbidden``, ``FieldValueRequired``; ``FieldValueDuplicate`` drops the message)."""
    rule: str
    message: str
    field_path: str
    message_expression: str = ""
    reason: str = "FieldValueInvalid"


CEL_RULES: tuple[CelRule, ...] = (
    CelRule("!has(self.symbols.monitoring) || self.symbols.monitoring.all(s, !(s in self.symbols.trading))",
            "monitoring symbols must not repeat trading symbols", ".symbols.monitoring",
            "self.symbols.monitoring.filter(s, s in self.symbols.trading)[0] + "
            "' already traded; monitoring symbols must not repeat trading symbols'"),
    CelRule("self.symbols.trading.all(s, self.symbols.trading.exists_one(t, t == s))",
            "trading symbols must not repeat", ".symbols.trading"),
    CelRule("!has(self.risk) || !has(self.risk.allowedSymbols) || self.risk.allowedSymbols.size() == 0 || "
            "self.risk.allowedSymbols.exists(s, s in self.symbols.trading)",
            "risk.allowedSymbols must include at least one trading symbol", ".risk.allowedSymbols"),
)


@dataclass(frozen=True)
class TradingClient:
    """A resource as the operator sees it: identity, generation and the checked spec."""
    namespace: str
    name: str
    generation: int
    spec: TradingClientSpec
    uid: str = ""
    # The ``mt5fleet.io/rotate-signing-key`` annotation: a new value asks for a new signing
    # key on the tenant's NATS account (see ``adapters.tenant_accounts``).
    key_rotation: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class SpecError(ValueError):
    """A TradingClient body that the schema refuses; ``problems`` are "path: reason"."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


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
    """A model as the camelCase JSON a resource carries (the inverse of ``from_mapping``)."""
    if dataclasses.is_dataclass(value):
        return {camel(f.name): to_mapping(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_mapping(item) for item in value]
    if isinstance(value, dict):
        return {key: to_mapping(item) for key, item in value.items()}
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any]) -> T:
    """A model from camelCase JSON that the CRD's schema has accepted (``admission.py``
    checks it first): a field left out takes the model's default."""
    hints = _hints(cls)
    return cls(**{f.name: _typed(hints[f.name], data[camel(f.name)])
                  for f in dataclasses.fields(cls) if camel(f.name) in data})  # type: ignore[arg-type]


def _typed(hint: Any, raw: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(typing.cast(type, hint), raw)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(_typed(typing.get_args(hint)[0], item) for item in raw)
    if origin is dict:
        return dict(raw)
    return float(raw) if hint is float else raw  # JSON writes 1.0 as 1


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations costs more than reading a whole spec: once per class.
    return typing.get_type_hints(cls)
