"""The pure reconcile core: from a TradingClient, its tier and the measured correlations,
what should exist for the user; from what the appliers did and what the agent reports,
what the resource's status says. No I/O: every input is an argument.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mt5fleet.operator.core.brokers import mismatch
from mt5fleet.operator.core.models import (
    Condition,
    EffectiveSymbols,
    TradingClient,
    TradingClientSpec,
    TradingClientStatus,
)
from mt5fleet.operator.core.nats_claims import NatsLimits
from mt5fleet.operator.core.permissions import UserAccess, user_access
from mt5fleet.operator.core.tiers import Tier
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.config import ClientConfig, Preferences, RiskProfile, SizingMode
from mt5fleet.proto.domain.correlations import Pair, select_pairs
from mt5fleet.proto.domain.trading import AccountType

SIZING_MODES = {
    "riskPercent": SizingMode.RISK_PERCENT,
    "fixedLot": SizingMode.FIXED_LOT,
    "balanceMultiplier": SizingMode.BALANCE_MULTIPLIER,
    "equityMultiplier": SizingMode.EQUITY_MULTIPLIER,
}
ACCOUNT_TYPES = {"demo": AccountType.DEMO, "live": AccountType.LIVE}

# What a BrokerMismatch condition adds: what the platform does about it (``guarded``).
MISMATCH_GUARD = ("new positions are blocked (the user's config is close-only, the agent refuses opening commands) "
                  "until the agent reports the declared account")

# An agent heartbeats every 5 s; three missed ones mean it is gone.
AGENT_SILENCE_MS = 15_000


@dataclass(frozen=True)
class TierFinding:
    """One way the spec asks for more than its tier gives; what was left out."""
    reason: str
    message: str


@dataclass(frozen=True)
class Selection:
    symbols: EffectiveSymbols
    findings: tuple[TierFinding, ...]


@dataclass(frozen=True)
class Desired:
    """Everything the appliers make true for one user."""
    user_id: str
    tier: Tier
    selection: Selection
    config: ClientConfig                # without credentials and updated_at: the appliers add them
    shard: int
    subjects: Mapping[str, str]
    credentials_active: bool            # False while paused: the JWT is revoked
    access: UserAccess                  # NATS permissions (md.<symbol> of its effective symbols), limits


def select_symbols(spec: TradingClientSpec, tier: Tier, correlations: Mapping[Pair, float] | None,
                   *, threshold: float = 0.7) -> Selection:
    """The symbols in effect under the tier's limits, and what had to be left out."""
    findings: list[TierFinding] = []
    trading = _allowed(spec.symbols.trading, tier, "trading", findings)
    trading = _capped(trading, tier.max_trading_pairs, tier, "TradingPairsOverLimit", "trading", findings)
    monitoring = _allowed([s for s in spec.symbols.monitoring if s not in trading], tier, "monitoring", findings)
    monitoring = _capped(monitoring, tier.max_monitoring_pairs, tier, "MonitoringPairsOverLimit", "monitoring",
                         findings)
    correlation: list[str] = []
    if tier.correlation_analysis and tier.max_correlation_pairs:
        candidates = select_pairs(trading, correlations, threshold=threshold)
        correlation = [s for s in candidates if s not in monitoring and tier.allows_symbol(s)]
        correlation = correlation[: tier.max_correlation_pairs]
    symbols = EffectiveSymbols(trading=tuple(trading), correlation=tuple(correlation), monitoring=tuple(monitoring))
    return Selection(symbols=symbols, findings=tuple(findings))


def _allowed(symbols: Sequence[str], tier: Tier, kind: str, findings: list[TierFinding]) -> list[str]:
    kept = [s for s in symbols if tier.allows_symbol(s)]
    custom = [s for s in symbols if not tier.allows_symbol(s)]
    if custom:
        findings.append(TierFinding("CustomPairsNotAllowed", f"{kind} symbols {', '.join(custom)} are custom pairs, "
                                    f"which tier {tier.name} does not allow: left out"))
    return kept


def _capped(symbols: list[str], limit: int, tier: Tier, reason: str, kind: str,
            findings: list[TierFinding]) -> list[str]:
    if not limit or len(symbols) <= limit:
        return symbols
    over = symbols[limit:]
    findings.append(TierFinding(reason, f"{len(symbols)} {kind} symbols asked, tier {tier.name} allows {limit} "
                                f"({len(over)} over): {', '.join(over)} left out"))
    return symbols[:limit]


def desired_state(client: TradingClient, tier: Tier, correlations: Mapping[Pair, float] | None = None,
                  *, partitions: int = subjects.ADJUST_PARTITIONS) -> Desired:
    spec = client.spec
    selection = select_symbols(spec, tier, correlations)
    shard = subjects.partition_of(spec.user_id, partitions)
    symbols = selection.symbols
    md = tuple(dict.fromkeys(symbols.trading + symbols.correlation + symbols.monitoring))
    access = access_for(spec.user_id, md, tier)
    return Desired(user_id=spec.user_id, tier=tier, selection=selection,
                   config=client_config(client, tier, symbols, shard), shard=shard,
                   subjects=user_subjects(spec.user_id), credentials_active=not spec.paused, access=access)


def broker_mismatch(client: TradingClient, agent: AgentSeen) -> str | None:
    """Why the agent's reported account is not the TradingClient's broker, or None."""
    broker = client.spec.broker
    return mismatch(broker.name, broker.server, agent.company, agent.server)


def guarded(desired: Desired, wrong: str | None) -> Desired:
    """The desired state with the config close-only while the agent's terminal is logged into
    another broker's account than declared (``wrong``, from ``broker_mismatch``): workers send
    that user no opening command, closes still flow. Not paused: pausing revokes the agent's
    NATS credentials, and a revoked agent could neither close what it holds nor report the
    matching account that lifts the guard."""
    if not wrong or desired.config.close_only:
        return desired
    return replace(desired, config=desired.config.evolve(close_only=True))


def access_for(user_id: str, md_symbols: Sequence[str], tier: Tier) -> UserAccess:
    """The user's NATS permissions, with its tier's connection limits."""
    return user_access(user_id, md_symbols, NatsLimits(payload=tier.max_payload_bytes,
                                                       subs=tier.max_subscriptions, data=tier.max_data_bytes))


def client_config(client: TradingClient, tier: Tier, symbols: EffectiveSymbols, shard: int) -> ClientConfig:
    """What the user's agent and its adjustment worker read from ``tc-config``."""
    spec, risk, prefs = client.spec, client.spec.risk, client.spec.preferences
    return ClientConfig(
        user_id=spec.user_id, tier_name=tier.name, tier=tier.subscription_tier,
        trading_symbols=symbols.trading, correlation_symbols=symbols.correlation,
        monitoring_symbols=symbols.monitoring, symbol_map=tuple(sorted(spec.broker.symbol_map.items())),
        limits=tier.limits,
        risk=RiskProfile(
            max_risk_per_trade_pct=risk.max_risk_per_trade, max_daily_loss=risk.max_daily_loss,
            max_drawdown=risk.max_drawdown, allow_news_trading=risk.allow_news_trading,
            allowed_symbols=risk.allowed_symbols, max_spread_points=risk.max_spread_points,
            max_lot=risk.max_lot, max_deviation_points=risk.max_deviation_points),
        preferences=Preferences(
            preferred_lot_size=prefs.preferred_lot_size, max_open_positions=risk.max_open_positions,
            auto_close_friday=prefs.auto_close_friday, conservative_mode=prefs.conservative_mode,
            sizing_mode=SIZING_MODES[prefs.sizing_mode], sizing_value=prefs.sizing_value),
        paused=spec.paused, close_only=spec.close_only, max_quote_age_ms=prefs.max_quote_age_ms,
        max_signal_age_ms=prefs.max_signal_age_ms, worker_shard=shard, generation=client.generation,
        broker_name=spec.broker.name, broker_server=spec.broker.server,
        account_type=ACCOUNT_TYPES[spec.broker.account_type])


def user_subjects(user_id: str) -> dict[str, str]:
    return {channel.value: subjects.user_subject(user_id, channel) for channel in subjects.Channel}


def worker_pool_size(users: int, *, users_per_worker: int = 2000, minimum: int = 1,
                     maximum: int = subjects.ADJUST_PARTITIONS) -> int:
    """Adjustment replicas for the fleet: one per ``users_per_worker`` users, within
    bounds; never more than there are partitions (a replica without one idles)."""
    if users_per_worker < 1 or minimum < 0 or maximum < minimum:
        raise ValueError("users_per_worker >= 1 and 0 <= minimum <= maximum")
    return max(minimum, min(maximum, math.ceil(users / users_per_worker)))


# ---------------------------------------------------------------------- status
@dataclass(frozen=True)
class ApplyOutcome:
    """What the appliers reported; an ``error`` names the step that failed and why."""
    nats_ready: bool
    credentials_issued: bool
    credentials_secret: str = ""
    error: str = ""


@dataclass(frozen=True)
class AgentSeen:
    """The agent's last heartbeat, as the operator read it from JetStream."""
    at_ms: int | None = None
    version: str = ""
    terminal_connected: bool = False
    latency_ms: float = 0.0
    # What the agent's terminal says it is logged into (its last AccountProfile): checked
    # against the TradingClient's declared broker.
    company: str = ""
    server: str = ""


def status_for(client: TradingClient, desired: Desired, outcome: ApplyOutcome, agent: AgentSeen,
               previous: TradingClientStatus, now_ms: int) -> TradingClientStatus:
    gen = client.generation
    findings = desired.selection.findings
    conditions = [
        _condition("NatsProvisioned", outcome.nats_ready, "Provisioned" if outcome.nats_ready else "ApplyFailed",
                   "JetStream resources and the config entry are in place" if outcome.nats_ready else outcome.error),
        _credentials_condition(desired, outcome),
        _agent_condition(agent, now_ms, (client.spec.broker.name, client.spec.broker.server)),
        _condition("TierCompliant", not findings, findings[0].reason if findings else "WithinLimits",
                   "; ".join(f.message for f in findings) or f"within the limits of tier {desired.tier.name}"),
    ]
    ready = outcome.nats_ready and (outcome.credentials_issued or not desired.credentials_active)
    conditions.insert(0, _condition("Ready", ready, "Reconciled" if ready else "NotReconciled",
                                    "the user is provisioned" if ready else outcome.error or "provisioning"))
    stamped = _stamped(conditions, previous.conditions, gen, now_ms)
    return TradingClientStatus(
        phase=_phase(client, ready, findings, outcome), observed_generation=gen, conditions=stamped,
        effective_symbols=desired.selection.symbols, subjects=dict(desired.subjects), worker_shard=desired.shard,
        credentials_secret=outcome.credentials_secret, agent_version=agent.version,
        last_heartbeat=rfc3339(agent.at_ms) if agent.at_ms else previous.last_heartbeat,
        latency_ms=agent.latency_ms)


def invalid_status(client_generation: int, problems: Sequence[str], previous: TradingClientStatus,
                   now_ms: int, *, reason: str = "InvalidSpec") -> TradingClientStatus:
    """A resource the schema refuses (local mode only: the API server refuses it in a cluster),
    or one the platform refuses (``reason``: e.g. BrokerNotApproved)."""
    message = "; ".join(problems)
    conditions = [_condition("Ready", False, reason, message)]
    return replace(previous, phase="Invalid", observed_generation=client_generation,
                   conditions=_stamped(conditions, previous.conditions, client_generation, now_ms))


def with_agent(status: TradingClientStatus, agent: AgentSeen, now_ms: int,
               broker: tuple[str, str] | None = None) -> TradingClientStatus:
    """The timer's update: only the AgentConnected condition and the heartbeat figures.
    ``broker``: the declared (company, server) the agent's account must match."""
    others = tuple(c for c in status.conditions if c.type != "AgentConnected")
    fresh = _stamped([_agent_condition(agent, now_ms, broker)], status.conditions, status.observed_generation, now_ms)
    return replace(status, conditions=others + fresh, agent_version=agent.version or status.agent_version,
                   last_heartbeat=rfc3339(agent.at_ms) if agent.at_ms else status.last_heartbeat,
                   latency_ms=agent.latency_ms)


def _credentials_condition(desired: Desired, outcome: ApplyOutcome) -> Condition:
    if not desired.credentials_active:
        return _condition("CredentialsIssued", False, "Paused", "paused: the user's NATS credentials are revoked")
    if outcome.credentials_issued:
        return _condition("CredentialsIssued", True, "Issued", f"in Secret {outcome.credentials_secret}")
    return _condition("CredentialsIssued", False, "NotIssued", outcome.error or "not issued yet")


def _agent_condition(agent: AgentSeen, now_ms: int, broker: tuple[str, str] | None = None) -> Condition:
    if agent.at_ms is None:
        return _condition("AgentConnected", None, "NeverSeen", "no heartbeat from the agent yet")
    age_s = max(now_ms - agent.at_ms, 0) / 1000
    if now_ms - agent.at_ms > AGENT_SILENCE_MS:
        return _condition("AgentConnected", False, "HeartbeatMissing", f"last heartbeat {age_s:.0f} s ago")
    wrong = mismatch(*broker, agent.company, agent.server) if broker else None
    if wrong:  # logged into another broker's account than declared: not the user's agent to trust
        return _condition("AgentConnected", False, "BrokerMismatch", f"{wrong}; {MISMATCH_GUARD}")
    if not agent.terminal_connected:
        return _condition("AgentConnected", True, "TerminalDisconnected",
                          "the agent is connected but its MT5 terminal is not")
    return _condition("AgentConnected", True, "Heartbeating", f"last heartbeat {age_s:.0f} s ago")


def _phase(client: TradingClient, ready: bool, findings: Sequence[TierFinding], outcome: ApplyOutcome) -> str:
    if outcome.error:
        return "Degraded" if outcome.nats_ready else "Provisioning"
    if client.spec.paused:
        return "Paused"
    if not ready:
        return "Provisioning"
    return "Degraded" if findings else "Ready"


# A condition's message is for a human reading `kubectl describe`: the CRD allows 4,096
# characters; well under that, whatever a step's error said (the log has the rest).
MAX_CONDITION_MESSAGE = 1024


def _condition(kind: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[: MAX_CONDITION_MESSAGE - 1] + "…"
    return Condition(type=kind, status=status, reason=reason, message=message, last_transition_time="")


def _stamped(conditions: Sequence[Condition], previous: Sequence[Condition], generation: int,
             now_ms: int) -> tuple[Condition, ...]:
    """Keep lastTransitionTime while a condition's status stays the same (Kubernetes convention)."""
    before = {c.type: c for c in previous}
    stamped = []
    for condition in conditions:
        old = before.get(condition.type)
        since = old.last_transition_time if old and old.status == condition.status else rfc3339(now_ms)
        stamped.append(replace(condition, last_transition_time=since, observed_generation=generation))
    return tuple(stamped)


def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
