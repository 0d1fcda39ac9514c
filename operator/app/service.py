"""The reconciler both front ends share (kopf in a cluster, the folder watcher in local
mode): the pure core decides, the appliers act, the core turns what happened into status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mt5fleet.operator.adapters.appliers import (
    Scaler,
    UserAppliers,
    bootstrap_secret_name,
    ensure_worker_replicas,
)
from mt5fleet.operator.adapters.errors import describe
from mt5fleet.operator.adapters.metrics import OperatorMetrics
from mt5fleet.operator.core import reconcile
from mt5fleet.operator.core.brokers import ANY_BROKER, ApprovedBrokers, mismatch
from mt5fleet.operator.core.changes import Applied, Change
from mt5fleet.operator.core.models import TradingClient, TradingClientStatus
from mt5fleet.operator.core.reconcile import AgentSeen, ApplyOutcome, Desired
from mt5fleet.operator.core.tiers import Tier
from mt5fleet.proto import subjects, validation
from mt5fleet.proto.domain.config import ClientConfig, SealedCredentials
from mt5fleet.proto.domain.correlations import Pair
from mt5fleet.proto.v1 import account_pb2, heartbeat_pb2, market_data_pb2

log = logging.getLogger("mt5fleet.operator")


# How long a count of the served users is reused by resize_pool.
POOL_RECOUNT_S = 15.0

def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Result:
    status: TradingClientStatus
    applied: tuple[Applied, ...] = ()
    desired: Desired | None = None

    @property
    def changes(self) -> tuple[Applied, ...]:
        return tuple(a for a in self.applied if a.changed)


@dataclass
class FleetView:
    """What this process last wrote for each user: phase and tier counts for metrics
    (the worker pool is sized from the config bucket instead: ``resize_pool``)."""
    by_key: dict[str, tuple[str, str]] = field(default_factory=dict)   # key -> (tier, phase)

    def record(self, key: str, tier: str, phase: str) -> None:
        self.by_key[key] = (tier, phase)

    def forget(self, key: str) -> None:
        self.by_key.pop(key, None)

    @property
    def users(self) -> int:
        return len(self.by_key)


class Reconciler:
    def __init__(self, appliers: UserAppliers, tiers: Mapping[str, Tier], *, scaler: Scaler | None = None,
                 metrics: OperatorMetrics | None = None, now_ms: Callable[[], int] = wall_ms,
                 users_per_worker: int = 2000, brokers: ApprovedBrokers = ANY_BROKER) -> None:
        self.appliers, self.tiers, self.scaler = appliers, dict(tiers), scaler
        self.brokers = brokers
        # user -> the (company, server) its TradingClient declares: the timer checks the
        # agent's reported account against it without the spec at hand.
        self.declared: dict[str, tuple[str, str]] = {}
        # user -> the spec's own close_only: what the config returns to when a broker
        # mismatch is lifted by the timer's cheap pass (``observe``).
        self.own_close_only: dict[str, bool] = {}
        self.mismatched: set[str] = set()   # users whose agent reports another broker's account
        self.metrics = metrics or OperatorMetrics()
        self.now_ms = now_ms
        self.users_per_worker = users_per_worker
        self.correlations: dict[Pair, float] | None = None
        self.fleet = FleetView()
        self._streams_at: float | None = None   # monotonic time ensure_streams last checked them
        self._users_counted: tuple[float, int] | None = None  # (monotonic time, served users)

    # ------------------------------------------------------------------ create / update / resume
    async def reconcile(self, client: TradingClient, previous: TradingClientStatus, *,
                        streams_checked: bool = False) -> Result:
        """``streams_checked``: the caller has ensured the shared streams for many users
        (``ensure_streams``: a local pass, a resync interval), so this user's reconcile
        checks only what is the user's."""
        started = time.perf_counter()
        tier = self.tiers.get(client.spec.tier)
        if tier is None:
            known = ", ".join(sorted(self.tiers))
            return self._invalid(client, [f"spec.tier: unknown tier {client.spec.tier!r} (known: {known})"], previous)
        broker = client.spec.broker
        refusal = self.brokers.refusal(broker.name, broker.server)
        if refusal is not None:  # nothing is provisioned for an unapproved broker's account
            return self._invalid(client, [f"spec.broker: {refusal}"], previous, reason="BrokerNotApproved")
        user = client.spec.user_id
        self.declared[user] = (broker.name, broker.server)
        self.own_close_only[user] = client.spec.close_only
        try:
            desired = reconcile.desired_state(client, tier, self.correlations)
        except ValueError as exc:  # e.g. a tier whose subscription limit cannot hold the user's symbols
            return self._invalid(client, [f"spec: {exc}"], previous)
        seen = await self.agent_seen(user)
        wrong = reconcile.broker_mismatch(client, seen)
        self._note_mismatch(user, wrong)
        desired = reconcile.guarded(desired, wrong)   # another broker's account: close-only
        applied, outcome = await self._apply(client, desired, streams_checked)
        status = reconcile.status_for(client, desired, outcome, seen, previous, self.now_ms())
        self.metrics.reconciles.labels("error" if outcome.error else "ok").inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        self._count(applied)
        self.fleet.record(client.key, tier.name, status.phase)
        self.metrics.set_clients(self.fleet.by_key.values())
        return Result(status=status, applied=tuple(applied), desired=desired)

    def invalid(self, client_key: str, generation: int, problems: list[str],
                previous: TradingClientStatus, *, reason: str = "InvalidSpec") -> TradingClientStatus:
        """A body the schema (local mode) or the platform refuses: nothing is changed, the
        status says why."""
        self.metrics.reconciles.labels("invalid").inc()
        status = reconcile.invalid_status(generation, problems, previous, self.now_ms(), reason=reason)
        self.fleet.record(client_key, "unknown", status.phase)
        self.metrics.set_clients(self.fleet.by_key.values())
        return status

    def _invalid(self, client: TradingClient, problems: list[str], previous: TradingClientStatus, *,
                 reason: str = "InvalidSpec") -> Result:
        return Result(status=self.invalid(client.key, client.generation, problems, previous, reason=reason))

    async def _apply(self, client: TradingClient, desired: Desired,
                     streams_checked: bool) -> tuple[list[Applied], ApplyOutcome]:
        """Streams, Secret, config entry (NatsProvisioned), then credentials. A failed step
        stops the rest; the status names it and the next run retries."""
        user = desired.user_id
        applied: list[Applied] = []
        nats_ready, step = False, "JetStream streams"
        try:
            if not streams_checked:
                applied.append(await self.appliers.ensure_user_streams(user, present=True))
            step = "bootstrap Secret"
            applied.append(await self.appliers.ensure_bootstrap_secret(user, present=True))
            step = "config entry"
            current = await self.appliers.current_config(user, self.now_ms())
            config = desired.config.evolve(credentials=await self._sealed(client, current))
            applied.append(await self.appliers.ensure_config(user, config, self.now_ms(), current=current))
            nats_ready, step = True, "NATS credentials"
            applied.append(await self.appliers.ensure_credentials(
                user, desired.access if desired.credentials_active else None, rotation=client.key_rotation))
        except Exception as exc:
            # The whole error (an HTTP exchange, for the API server's) to the log; the status
            # and its Event get a short, stable form, so a retry failing alike rewrites nothing.
            log.warning("reconciling %s: %s failed: %s", client.key, step, exc)
            return applied, ApplyOutcome(nats_ready=nats_ready, credentials_issued=False,
                                         error=f"{step}: {describe(exc)}")
        return applied, ApplyOutcome(nats_ready=True, credentials_issued=desired.credentials_active,
                                     credentials_secret=bootstrap_secret_name(user))

    async def _sealed(self, client: TradingClient, current: ClientConfig | None) -> SealedCredentials:
        """The MT5 password sealed under the agent's key, keeping the entry's ciphertext
        while it still opens to the same password."""
        spec = client.spec
        ref = spec.account.password_secret_ref
        return await self.appliers.sealed_password(
            spec.user_id, spec.account.login, spec.broker.server, (ref.name, ref.key),
            current.credentials if current is not None else None)

    async def ensure_streams(self, *, unless_within_s: float = 0.0) -> Applied | None:
        """The shared streams, once for many users (drift repair included). With
        ``unless_within_s``: skipped (None) if this checked them that recently, so that
        kopf's per-resource timers check them once per interval, not once per user."""
        now = time.monotonic()
        if unless_within_s and self._streams_at is not None and now - self._streams_at < unless_within_s:
            return None
        applied = await self.appliers.ensure_streams()
        self._streams_at = now
        self._count([applied])
        return applied

    # ------------------------------------------------------------------ delete
    async def finalize(self, client_key: str, user_id: str) -> list[Applied]:
        """Remove the user's config entry, credentials, JetStream data and bootstrap
        Secret; anything already gone counts as done."""
        applied = [
            await self.appliers.ensure_config(user_id, None, self.now_ms()),
            await self.appliers.ensure_credentials(user_id, None, close=True),
            await self.appliers.ensure_user_streams(user_id, present=False),
            await self.appliers.ensure_bootstrap_secret(user_id, present=False),
        ]
        self._count(applied)
        self.metrics.reconciles.labels("deleted").inc()
        self.fleet.forget(client_key)
        self.declared.pop(user_id, None)
        self.own_close_only.pop(user_id, None)
        self._note_mismatch(user_id, None)
        self.metrics.set_clients(self.fleet.by_key.values())
        return applied

    # ------------------------------------------------------------------ timer
    async def observe(self, user_id: str, status: TradingClientStatus) -> TradingClientStatus:
        """The timer's cheap pass: the agent's heartbeat into AgentConnected, and the config
        made close-only (or given back its own close_only) when the agent's account stopped
        (or started) matching the declared broker."""
        seen, declared = await self.agent_seen(user_id), self.declared.get(user_id)
        wrong = mismatch(*declared, seen.company, seen.server) if declared else None
        self._note_mismatch(user_id, wrong)
        if declared is not None:
            await self._guard_config(user_id, wrong)
        return reconcile.with_agent(status, seen, self.now_ms(), declared)

    async def _guard_config(self, user_id: str, wrong: str | None) -> None:
        """Only the close_only of the entry the last reconcile wrote: the rest of it is the
        reconcile's to decide."""
        now = self.now_ms()
        try:
            current = await self.appliers.current_config(user_id, now)
            if current is None:
                return   # not provisioned (yet): the reconcile writes it, guarded
            want = self.own_close_only.get(user_id, False) or wrong is not None
            if current.close_only != want:
                applied = await self.appliers.ensure_config(user_id, current.evolve(close_only=want), now,
                                                            current=current)
                log.warning("%s: config %s close-only (%s)", user_id, "made" if want else "no longer",
                            wrong or "the agent's account matches the declared broker again")
                self._count([applied])
        except Exception as exc:  # NATS away: the next pass (or the reconcile) converges
            log.warning("could not update %s's config for its broker check: %s", user_id, exc)

    def _note_mismatch(self, user_id: str, wrong: str | None) -> None:
        if wrong is None:
            self.mismatched.discard(user_id)
        else:
            self.mismatched.add(user_id)
        self.metrics.broker_mismatches.set(len(self.mismatched))

    async def agent_seen(self, user_id: str) -> AgentSeen:
        subject = subjects.user_subject(user_id, subjects.Channel.HEARTBEAT)
        try:
            message = await self.appliers.js.get_last_msg(subjects.HEARTBEAT_STREAM, subject)
            beat = heartbeat_pb2.Heartbeat.FromString(message.data or b"")
        except Exception:  # no heartbeat yet (NotFound) or an unreadable one: not connected
            return AgentSeen()
        company, server = await self._account_of(user_id)
        return AgentSeen(at_ms=beat.timestamp or None, version=beat.agent_version,
                         terminal_connected=beat.terminal_connected, latency_ms=beat.last_command_latency_ms,
                         company=company, server=server)

    async def _account_of(self, user_id: str) -> tuple[str, str]:
        """The broker company and server of the agent's last AccountProfile (MT5's
        ``AccountInfo.company``/``server``), or empty: nothing reported yet."""
        subject = subjects.user_subject(user_id, subjects.Channel.ACCOUNT)
        try:
            message = await self.appliers.js.get_last_msg(subjects.ACCOUNT_STREAM, subject)
            account = account_pb2.AccountProfile.FromString(message.data or b"")
        except Exception:  # none yet, or unreadable: nothing to compare
            return "", ""
        return account.broker_name, account.server_name

    async def resize_pool(self) -> Applied | None:
        """The adjust pool sized from the users the config bucket holds (state from the
        cluster: a restart changes nothing). Counted at most every ``POOL_RECOUNT_S``: every
        event calls this, and listing 10,000 keys per event would cost more than it tells."""
        if self.scaler is None:
            return None
        users = await self._served_users()
        if users is None:  # unknown: never scale on a guess (the next pass retries)
            return None
        replicas = reconcile.worker_pool_size(users, users_per_worker=self.users_per_worker)
        self.metrics.worker_replicas.set(replicas)
        try:
            applied = await ensure_worker_replicas(self.scaler, replicas)
        except Exception as exc:  # the pool's trouble (Deployment gone, API down) is no user's: the next pass retries
            log.warning("could not size the worker pool to %d replica(s): %s", replicas, exc)
            return None
        self._count([applied])
        return applied

    async def _served_users(self) -> int | None:
        now = time.monotonic()
        if self._users_counted is not None and now - self._users_counted[0] < POOL_RECOUNT_S:
            return self._users_counted[1]
        try:
            users = await self.appliers.served_users()
        except Exception as exc:
            log.warning("could not count the served users (config bucket): %s", exc)
            return None
        self._users_counted = (now, users)
        return users

    def on_correlations(self, raw: bytes) -> None:
        try:
            snapshot = validation.decode(market_data_pb2.CorrelationSnapshot, raw)
            self.correlations = validation.check_correlation_snapshot(snapshot, self.now_ms())
        except validation.ValidationError as exc:  # keep the last good matrix
            log.warning("skipped an unreadable correlation snapshot: %s", exc)

    def _count(self, applied: list[Applied]) -> None:
        for item in applied:
            if item.resource == "config" and item.change in (Change.CREATED, Change.DELETED):
                self._users_counted = None  # this process changed who is served: count again
            if item.changed:
                self.metrics.changes.labels(item.resource.split()[0], item.change.value).inc()
