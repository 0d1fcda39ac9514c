"""The intruder suite's platform (tests/test_intruder.py): a real nats-server in JWT operator
mode behind TLS (a CA made for the run, as the demo does), the fleet's streams, buckets and
consumers bootstrapped and seeded, and tenants whose credentials come from the operator's
own issuing path (``reconcile.access_for`` -> ``JwtIssuer.ensure_account`` / ``issue``).

Also the "nothing changed" proof: :func:`snapshot` reads everything an intruder could touch
(every stream's per-subject counts and sequences, every consumer's delivery and ack state,
every KV key's revision, every account JWT the server serves) and first asserts that the
seeded data is there, so an attack that emptied it could not compare equal to nothing.

A helper, not a test module: ``from intruder_kit import ...``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.adapters.jwt_issuer import JwtIssuer
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core.permissions import UserAccess
from mt5fleet.operator.core.reconcile import access_for
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn, tlsgen
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, TlsFiles

# The attacker, its victim (both on the free tier: the smallest limits) and a user of the
# platform that is not a tenant of this server (its data must survive too).
ATTACKER, VICTIM, BYSTANDER = "alice", "bob", "carol"
TIER = DEFAULT_TIERS["free"]
MD = {ATTACKER: ("EURUSD", "GBPUSD"), VICTIM: ("USDJPY", "EURUSD")}
OUTSIDE_TIER = "XAUUSD"  # in nobody's md imports
STORED = tuple(channel for channel in subjects.Channel if channel.from_agent and channel.stored)
# TC_PRICES keeps quotes 60 s: longer here, so that the seed outlives the module and an
# expiry is never mistaken for (or hides) an attack. Nothing else differs from production.
LAYOUT = subjects.build_layout({"streams": {subjects.PRICES_STREAM: {"max_age_s": 3600}}})
KV_STREAMS = tuple(bucket.stream_name for bucket in LAYOUT.buckets)
ALL_STREAMS = (*(stream.name for stream in LAYOUT.streams), *KV_STREAMS)
# A signal the service user pulled and did not acknowledge: an ack aimed at it would show.
PENDING_CONSUMER = subjects.adjust_consumer(0)


@dataclass
class Fleet:
    server: EmbeddedNats
    chain: na.TrustChain
    ca: Path
    folder: Path
    access: dict[str, UserAccess]
    creds: dict[str, Path]              # each tenant's agent credentials, as the operator issued them
    accounts: dict[str, str]            # user id -> tenant account public key
    pending_ack: str = ""               # the ack subject of the signal left unacknowledged
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self, name: str, creds: Path | None, *, tls_ca: bool = True, url: str | None = None
                 ) -> natsconn.NatsSettings:
        return natsconn.NatsSettings(servers=(url or self.server.url,), name=name,
                                     creds_file=str(creds) if creds else None,
                                     tls_ca=str(self.ca) if tls_ca else None, reconnect=False, connect_timeout_s=3)


def start_fleet(folder: Path) -> tuple[EmbeddedNats, Fleet]:
    """Start the TLS server (the caller closes it) and provision the tenants."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle = tlsgen.generate(folder / "tls")
    chain = na.create_trust_chain()
    server = EmbeddedNats(server_name="mt5fleet-test-intruder", operator=chain.server_mode(),
                          tls=TlsFiles(cert=bundle.server_cert, key=bundle.server_key))
    server.start()
    fleet = Fleet(server, chain, bundle.ca_cert, folder, {}, {}, {})
    try:
        asyncio.run(_provision(fleet))
    except BaseException:
        server.close()
        raise
    return server, fleet


def tenant_authority(fleet: Fleet, system_nc: Any) -> TenantAccounts:
    """The operator's tenant authority (as ``operator.app.runtime`` builds it)."""
    return TenantAccounts(fleet.chain.platform, fleet.chain.operator_signing, system_nc,
                          DirectorySecretStore(fleet.folder / "secrets"), trusted_signers=fleet.chain.trusted_signers)


async def issue_agent(fleet: Fleet, system_nc: Any, user_id: str, symbols: Iterable[str]) -> Path:
    """Exactly what the operator does for a TradingClient: the access its tier gives, the
    tenant account signed and pushed, the agent's user issued in it, its creds file."""
    access = access_for(user_id, tuple(symbols), TIER)
    issuer = JwtIssuer(tenant_authority(fleet, system_nc))
    await issuer.ensure_account(access)
    issued = await issuer.issue(access)
    path = fleet.folder / f"{user_id}-{issued.public_key[:8]}.creds"
    path.write_bytes(issued.creds)
    path.chmod(0o600)
    fleet.access[user_id] = access
    fleet.accounts[user_id] = await issuer.tenants.account_key(user_id) or ""
    return path


async def _provision(fleet: Fleet) -> None:
    system = await natsconn.connect(fleet.settings("system", _creds(fleet, fleet.chain.system_user)))
    service = await natsconn.connect(fleet.settings("service", _creds(fleet, fleet.chain.service_user)))
    try:
        # The operator gives the platform account the fleet's exports on start.
        authority = fleet.chain.authority()
        await na.push_account_jwt(system, authority.account_jwt(), trusted_signers=fleet.chain.trusted_signers)
        await bootstrap.bootstrap(service.jetstream(timeout=5), LAYOUT)
        for user_id, symbols in MD.items():
            fleet.creds[user_id] = await issue_agent(fleet, system, user_id, symbols)
        fleet.pending_ack = await seed(service)
    finally:
        await system.close()
        await service.close()


def _creds(fleet: Fleet, user: na.IssuedUser) -> Path:
    return na.write_creds(fleet.folder / f"{user.name}.creds", user)


def service_creds(fleet: Fleet) -> Path:
    return fleet.folder / f"{na.SERVICE_USER}.creds"


def system_creds(fleet: Fleet) -> Path:
    return fleet.folder / f"{na.SYSTEM_USER}.creds"


async def seed(service: Any) -> str:
    """Something in every stream and bucket an intruder could empty; returns the ack subject
    of a signal pulled from ``PENDING_CONSUMER`` and left unacknowledged."""
    js = service.jetstream(timeout=5)
    for user_id in (VICTIM, BYSTANDER):
        for channel in (*STORED, subjects.Channel.COMMANDS):
            await js.publish(subjects.user_subject(user_id, channel), f"{user_id}-{channel}".encode(),
                             headers={"Nats-Msg-Id": f"seed-{user_id}-{channel}"})
    for symbol in ("EURUSD", "USDJPY"):
        await js.publish(subjects.signal_subject(symbol), b"signal", headers={"Nats-Msg-Id": f"seed-{symbol}"})
    for symbol in ("EURUSD", "USDJPY", OUTSIDE_TIER):
        await js.publish(subjects.market_data_subject(symbol), symbol.encode())
    for user_id in (VICTIM, BYSTANDER):
        await js.publish(subjects.decision_subject(user_id, "sig-0"), b"decision",
                         headers={"Nats-Msg-Id": f"seed-decision-{user_id}"})
    config = await js.key_value(subjects.CONFIG_BUCKET)
    for user_id in (ATTACKER, VICTIM, BYSTANDER):
        await config.put(user_id, json.dumps({"user_id": user_id}).encode())
    leases = await js.key_value(subjects.LEASES_BUCKET)
    await leases.put(subjects.lease_key(0), b"replica-0")
    pull = await js.pull_subscribe_bind(PENDING_CONSUMER, subjects.SIGNALS_STREAM)
    pending = (await pull.fetch(1, timeout=5))[0]
    await pull.unsubscribe()
    return pending.reply


# --------------------------------------------------------------------------- nothing changed

async def snapshot(service: Any, system: Any, fleet: Fleet) -> dict[str, Any]:
    """Everything an intruder could change. Asserts the seeded data is there first."""
    js = service.jetstream(timeout=5)
    names = sorted([info.config.name async for info in _stream_infos(js)])
    assert names == sorted(ALL_STREAMS), names
    streams: dict[str, Any] = {}
    consumers: dict[str, Any] = {}
    for name in names:
        info = await js.stream_info(name, subjects_filter=">")
        streams[name] = {"subjects": dict(info.state.subjects or {}), "first": info.state.first_seq,
                         "last": info.state.last_seq, "messages": info.state.messages,
                         "config": (tuple(info.config.subjects or ()), info.config.max_age,
                                    info.config.max_msgs_per_subject, info.config.allow_rollup_hdrs,
                                    info.config.deny_delete, info.config.deny_purge)}
        for consumer in await js.consumers_info(name):
            consumers[f"{name}/{consumer.name}"] = (
                consumer.delivered.stream_seq, consumer.ack_floor.stream_seq, consumer.num_ack_pending,
                consumer.num_pending, consumer.config.filter_subject)
    revisions = {}
    for bucket in KV_STREAMS:
        for key_subject in streams[bucket]["subjects"]:
            revisions[key_subject] = (await js.get_msg(bucket, subject=key_subject, direct=True)).seq
    keys = {**fleet.accounts, "platform": fleet.chain.app_account.public_key,
            "system": fleet.chain.system_account.public_key}
    producer = getattr(fleet.chain, "producer_account", None)  # the signal producer's, where the chain has one
    if producer is not None:
        keys["producer"] = producer.public_key
    accounts = {name: await na.fetch_account_jwt(system, key) for name, key in keys.items()}
    state = {"streams": streams, "consumers": consumers, "kv": revisions, "accounts": accounts}
    assert_seeded(state)
    return state


def assert_seeded(state: dict[str, Any]) -> None:
    """The seed is there: a purge, a deleted stream, key or consumer would show."""
    streams = state["streams"]
    for user_id in (VICTIM, BYSTANDER):
        for channel in (*STORED, subjects.Channel.COMMANDS):
            subject = subjects.user_subject(user_id, channel)
            stream = _stream_of(subject)
            assert streams[stream]["subjects"].get(subject, 0) >= 1, f"seed missing: {subject}"
    assert streams[subjects.SIGNALS_STREAM]["subjects"].get("signals.EURUSD") == 1
    assert streams[subjects.MARKET_DATA_STREAM]["subjects"].get(f"md.{OUTSIDE_TIER}") == 1
    for user_id in (ATTACKER, VICTIM, BYSTANDER):
        assert subjects.config_key_subject(user_id) in state["kv"]
    expected = {f"{c.stream}/{c.durable}" for c in LAYOUT.consumers}
    assert expected <= set(state["consumers"]), sorted(expected - set(state["consumers"]))
    assert state["consumers"][f"{subjects.SIGNALS_STREAM}/{PENDING_CONSUMER}"][2] == 1  # the unacked signal
    assert all(token.count(".") == 2 for token in state["accounts"].values())


def without_own(state: dict[str, Any], own: Iterable[str]) -> dict[str, Any]:
    """The state minus what the attacker's own publishes may change: its own subjects'
    counts and their streams' sequences (checked separately by the caller)."""
    own = set(own)
    touched = {_stream_of(subject) for subject in own if _stream_of(subject)}
    streams = {}
    for name, stream in state["streams"].items():
        stream = {**stream, "subjects": {s: n for s, n in stream["subjects"].items() if s not in own}}
        if name in touched:
            stream = {**stream, "first": None, "last": None, "messages": None}
        streams[name] = stream
    # Their consumers' num_pending grows with the attacker's own messages; nothing else may move.
    consumers = {name: (*values[:3], None, values[4]) if name.split("/")[0] in touched else values
                 for name, values in state["consumers"].items()}
    return {**state, "streams": streams, "consumers": consumers}


def _stream_of(subject: str) -> str | None:
    for spec in LAYOUT.streams:
        for pattern in spec.subjects:
            if _matches(pattern, subject):
                return spec.name
    return None


def _matches(pattern: str, subject: str) -> bool:
    tokens, wanted = subject.split("."), pattern.split(".")
    if wanted[-1] == ">":
        return len(tokens) >= len(wanted) and all(w in ("*", t) for w, t in zip(wanted[:-1], tokens, strict=False))
    return len(tokens) == len(wanted) and all(w in ("*", t) for w, t in zip(wanted, tokens, strict=True))


async def _stream_infos(js: Any) -> Any:
    for info in await js.streams_info():
        yield info


def stream_of(subject: str) -> str | None:
    return _stream_of(subject)


async def served_account(system: Any, account: str) -> nj.AccountClaims:
    return nj.decode_account(await na.fetch_account_jwt(system, account)).claims


__all__ = [
    "ALL_STREAMS", "ATTACKER", "BYSTANDER", "KV_STREAMS", "LAYOUT", "MD", "OUTSIDE_TIER", "PENDING_CONSUMER",
    "STORED", "TIER", "VICTIM", "Fleet", "assert_seeded", "issue_agent", "seed", "served_account",
    "service_creds", "snapshot", "start_fleet", "stream_of", "system_creds", "tenant_authority", "without_own",
]


async def refusal(nc: Any, subject: str, body: bytes = b"{}", timeout: float = 2) -> str:
    """What the server answered a request: "no responders", or the JetStream API error's
    description (lower case), or the raw reply."""
    try:
        reply = await nc.request(subject, body, timeout=timeout)
    except nats.errors.NoRespondersError:
        return "no responders"
    return str(json.loads(reply.data).get("error", {}).get("description", reply.data)).lower()


async def next_or_none(sub: Any) -> Any:
    """The next message already delivered to ``sub``, or None."""
    try:
        return await sub.next_msg(timeout=0.05)
    except nats.errors.TimeoutError:
        return None
