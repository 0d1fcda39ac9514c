"""The signal producer's own account, proven against a real nats-server in JWT operator mode.

The trust chain creates it (``tenancy.producer_account``: a token-required service import of
``signals.*`` from the platform, nothing else) and the server preloads it. A producer's
JetStream publish lands in the platform's SIGNALS stream with a PubAck and ``Nats-Msg-Id``
dedupe; nothing else of the platform's is in its reach, not even with a user of its account
that has no permissions at all, and its reply-subject tricks change nothing. A tenant cannot
publish a signal. A trust chain made before the producer account gets one when the operator
starts (``operator/adapters/signal_producer.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import pytest
from intruder_kit import next_or_none, refusal
from nats.aio.client import RawCredentials
from nats.js.errors import NoStreamResponseError
from waiting import eventually

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.adapters import signal_producer as sp
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

INBOX = tenancy.producer_inbox_prefix()
# Where a producer would aim the server's answer (the PubAck) to its signal.
REPLY_TARGETS = (
    f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}", f"$JS.API.STREAM.DELETE.{subjects.COMMANDS_STREAM}",
    f"$JS.API.STREAM.PURGE.{subjects.SIGNALS_STREAM}", f"$JS.API.STREAM.PURGE.{subjects.config_stream_name()}",
    f"$JS.API.CONSUMER.DELETE.{subjects.SIGNALS_STREAM}.{subjects.adjust_consumer(0)}",
    "$KV.tc-config.alice", "tc.alice.commands", "tc.alice.executions", "tc.alice.prices", "md.EURUSD",
    "signals.GBPUSD", "$SYS.REQ.CLAIMS.UPDATE",
)
# What the producer must not reach directly: tenants', market data, the JetStream API, KV.
ELSEWHERE = ("tc.alice.prices", "tc.alice.executions", "tc.alice.commands", "md.EURUSD", "$KV.tc-config.alice")
QUIET_S = 0.5


@dataclasses.dataclass(frozen=True)
class Fleet:
    server: EmbeddedNats
    chain: na.TrustChain
    alice: na.IssuedUser  # a tenant's user with no permissions at all
    raw: na.IssuedUser    # a producer-account user with no permissions at all


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    chain = na.create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-producer", operator=chain.server_mode()) as server:
        alice = asyncio.run(_set_up(server, chain))
        producer = nj.decode_account(chain.producer_account_jwt).claims
        raw = na.AccountAuthority(producer, account_signer=chain.producer_signing,
                                  operator_signer=chain.operator_signing).issue_user("raw", nj.UserPermissions())
        yield Fleet(server, chain, alice, raw)


async def _set_up(server: EmbeddedNats, chain: na.TrustChain) -> na.IssuedUser:
    """Streams bootstrapped and seeded, tenant alice pushed: as the operator does."""
    system, service = await _connect(server, chain.system_user), await _connect(server, chain.service_user)
    try:
        await bootstrap.bootstrap(service.jetstream(timeout=5), subjects.build_layout())
        key, signing = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.ACCOUNT)
        issued_at = nj.decode_account(chain.app_account_jwt).issued_at + 1
        claims = tenancy.tenant_account("alice", ("EURUSD",), tenancy.TenantLimits.of_tier(DEFAULT_TIERS["free"]),
                                        tenant=key.public_key, platform=chain.platform, issued_at=issued_at,
                                        signing_keys=(signing.public_key,))
        await na.push_account_jwt(system, nj.encode_account(claims, chain.operator_signing, issued_at=issued_at),
                                  trusted_signers=chain.trusted_signers)
        js = service.jetstream(timeout=5)
        for channel in (subjects.Channel.EXECUTIONS, subjects.Channel.PRICES, subjects.Channel.COMMANDS):
            await js.publish(subjects.user_subject("carol", channel), b"carol")
        await js.publish("signals.EURUSD", b"seed", headers={"Nats-Msg-Id": "seed"})
        await (await js.key_value(subjects.CONFIG_BUCKET)).put("alice", json.dumps({"user_id": "alice"}).encode())
        authority = na.AccountAuthority(claims, account_signer=signing, operator_signer=chain.operator_signing)
        return authority.issue_user("alice", nj.UserPermissions())
    finally:
        await system.close()
        await service.close()


async def _connect(server: EmbeddedNats, user: na.IssuedUser, errors: list[str] | None = None, **options: Any) -> Any:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc).lower())

    return await nats.connect(server.url, user_credentials=RawCredentials(user.creds_text), allow_reconnect=False,
                              name=user.name, error_cb=on_error, **options)


@pytest.fixture
async def service(fleet):
    nc = await _connect(fleet.server, fleet.chain.service_user)
    yield nc
    await nc.close()


async def platform_state(service: Any) -> dict[str, Any]:
    """Every stream with its per-subject counts and consumers, and alice's KV revision."""
    js = service.jetstream(timeout=5)
    streams = {}
    for info in await js.streams_info():
        detail = await js.stream_info(info.config.name, subjects_filter=">")
        streams[info.config.name] = (detail.state.subjects or {},
                                     sorted(c.name for c in await js.consumers_info(info.config.name)))
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    assert streams[subjects.EXECUTIONS_STREAM][0]["tc.carol.executions"] == 1  # seeded: a purge would show
    assert subjects.adjust_consumer(0) in streams[subjects.SIGNALS_STREAM][1]
    return {"streams": streams, "kv": (await kv.get("alice")).revision}


def _signals(state: dict[str, Any]) -> dict[str, int]:
    return dict(state["streams"][subjects.SIGNALS_STREAM][0])


def _without_signals(state: dict[str, Any]) -> dict[str, Any]:
    streams = dict(state["streams"])
    streams[subjects.SIGNALS_STREAM] = ({}, streams[subjects.SIGNALS_STREAM][1])  # consumers stay compared
    return {**state, "streams": streams}


# =========================================================================== what a producer can do

async def test_a_producers_signal_lands_in_signals_with_a_puback_and_dedupe(fleet, service):
    producer = await _connect(fleet.server, fleet.chain.producer_user, inbox_prefix=INBOX)
    try:
        js = producer.jetstream(timeout=5)
        ack = await js.publish("signals.USDJPY", b"signal", headers={"Nats-Msg-Id": "p-1"})
        again = await js.publish("signals.USDJPY", b"retry", headers={"Nats-Msg-Id": "p-1"})
    finally:
        await producer.close()
    assert (ack.stream, ack.duplicate) == (subjects.SIGNALS_STREAM, None) and again.duplicate and again.seq == ack.seq
    stored = await service.jetstream().get_msg(subjects.SIGNALS_STREAM, subject="signals.USDJPY", direct=True)
    assert (stored.data, stored.headers["Nats-Msg-Id"]) == (b"signal", "p-1")
    info = await service.jetstream().stream_info(subjects.SIGNALS_STREAM, subjects_filter="signals.USDJPY")
    assert info.state.subjects == {"signals.USDJPY": 1}


async def test_the_server_serves_the_producer_account_the_model_built(fleet):
    system = await _connect(fleet.server, fleet.chain.system_user)
    try:
        served = nj.decode_account(await na.fetch_account_jwt(system, fleet.chain.producer_account.public_key)).claims
        platform = nj.decode_account(await na.fetch_account_jwt(system, fleet.chain.app_account.public_key)).claims
    finally:
        await system.close()
    assert served == nj.decode_account(fleet.chain.producer_account_jwt).claims
    assert sp.producer_fits(served, served.subject, platform) and not served.limits.jetstream.enabled
    assert nj.decode_user(fleet.chain.producer_user.jwt).claims.issuer_account == served.subject


# =========================================================================== what a producer cannot do

async def test_the_producer_reads_nothing_else(fleet, service):
    """Even a producer-account user allowed everything sees none of the platform's traffic."""
    raw = await _connect(fleet.server, fleet.raw)
    try:
        seen = await raw.subscribe(">")
        await raw.flush()
        js = service.jetstream()
        await js.publish("md.EURUSD", b"tick")
        await js.publish("tc.alice.commands", b"command")
        await js.publish("signals.EURUSD", b"signal", headers={"Nats-Msg-Id": "svc-1"})
        await (await js.key_value(subjects.CONFIG_BUCKET)).put("alice", json.dumps({"user_id": "alice"}).encode())
        await service.publish("tc.alice.executions", b"report")
        with pytest.raises(nats.errors.TimeoutError):
            await seen.next_msg(timeout=QUIET_S)
    finally:
        await raw.close()


async def test_the_producer_publishes_nothing_else(fleet, service):
    before = await platform_state(service)
    raw = await _connect(fleet.server, fleet.raw)
    try:
        for subject in ELSEWHERE:
            with pytest.raises(NoStreamResponseError):  # no import: nobody answers
                await raw.jetstream(timeout=1).publish(subject, b"forged")
            await raw.publish(subject, b"forged, no ack asked")
        outcomes = {call: await refusal(raw, call) for call in (
            f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}", f"$JS.API.STREAM.DELETE.{subjects.SIGNALS_STREAM}",
            f"$JS.API.CONSUMER.DELETE.{subjects.SIGNALS_STREAM}.{subjects.adjust_consumer(0)}",
            f"$JS.API.CONSUMER.CREATE.{subjects.SIGNALS_STREAM}", "$JS.API.STREAM.NAMES", "$JS.API.INFO",
            f"$JS.API.DIRECT.GET.{subjects.config_stream_name()}.$KV.tc-config.alice")}
        assert set(outcomes.values()) <= {"no responders", "jetstream not enabled for account"}, outcomes
        await raw.flush()
    finally:
        await raw.close()
    await asyncio.sleep(QUIET_S)
    assert await platform_state(service) == before


async def test_the_producer_users_grants_refuse_the_rest(fleet, service):
    """The issued ``signals`` user (defence in depth): every other publish or subscribe is a
    permissions violation, and nothing changes."""
    before = await platform_state(service)
    errors: list[str] = []
    producer = await _connect(fleet.server, fleet.chain.producer_user, errors, inbox_prefix=INBOX)
    try:
        for subject in (*ELSEWHERE, f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}"):
            await producer.publish(subject, b"forged")
        await producer.subscribe("tc.>")
        await producer.subscribe("_INBOX.>")
        await producer.flush()
        await eventually(lambda: len(errors), "every refusal reported", until=lambda n: n >= len(ELSEWHERE) + 3)
    finally:
        await producer.close()
    assert all("permissions violation" in error for error in errors), errors
    assert await platform_state(service) == before


async def test_a_producers_reply_subject_tricks_change_nothing(fleet, service):
    """Every PubAck aimed elsewhere arrives in the producer's own account, on the subject it
    named: no stream, consumer or KV entry of the platform changes, SIGNALS gets the
    signals (each once) and nothing more."""
    before = await platform_state(service)
    raw = await _connect(fleet.server, fleet.raw)
    try:
        landed = await raw.subscribe(">")
        await raw.flush()
        for index, target in enumerate(REPLY_TARGETS):
            await raw.publish("signals.AUDUSD", b"signal", reply=target, headers={"Nats-Msg-Id": f"trick-{index}"})
        await raw.flush()
        answers: list[str] = []

        async def collect() -> int:
            while (msg := await next_or_none(landed)) is not None:
                if msg.subject in REPLY_TARGETS:  # its own signals.AUDUSD echo aside
                    answers.append(msg.subject)
            return len(answers)

        await eventually(collect, "every PubAck in the producer's account", until=lambda n: n >= len(REPLY_TARGETS))
        await asyncio.sleep(QUIET_S)
        await collect()
    finally:
        await raw.close()
    after = await platform_state(service)
    assert sorted(answers) == sorted(REPLY_TARGETS)
    assert _without_signals(after) == _without_signals(before)
    added = {s: n - _signals(before).get(s, 0) for s, n in _signals(after).items() if n != _signals(before).get(s)}
    assert added == {"signals.AUDUSD": len(REPLY_TARGETS)}


# =========================================================================== tenants and signals

async def test_a_tenant_cannot_publish_a_signal(fleet, service):
    before = await platform_state(service)
    alice = await _connect(fleet.server, fleet.alice)
    try:
        with pytest.raises(NoStreamResponseError):
            await alice.jetstream(timeout=1).publish("signals.EURUSD", b"forged", headers={"Nats-Msg-Id": "a-1"})
        await alice.publish("signals.EURUSD", b"forged, no ack asked")
        await alice.publish("tc.alice.prices", b"{}", reply="signals.EURUSD")  # its PubAck stays in alice's account
        await alice.flush()
    finally:
        await alice.close()
    await asyncio.sleep(QUIET_S)
    after = await platform_state(service)
    assert after["streams"][subjects.SIGNALS_STREAM] == before["streams"][subjects.SIGNALS_STREAM]
    prices = (after["streams"][subjects.PRICES_STREAM][0], before["streams"][subjects.PRICES_STREAM][0])
    assert prices[0].get("tc.alice.prices") == prices[1].get("tc.alice.prices", 0) + 1  # its own, stored


# =========================================================================== an older trust chain

async def test_the_operator_gives_an_older_chain_a_producer_account(tmp_path):
    """A chain from before the producer account (platform without the signals export, no
    producer): the operator adds both at start-up, with a ``signals`` user in the secret
    store; a second start pushes nothing."""
    new = na.create_trust_chain()
    old = dataclasses.replace(new, producer_account=None, producer_signing=None, producer_account_jwt="",
                              producer_user=None)
    old = na.TrustChain.from_json(old.to_json())  # and it persists and loads as it was
    assert old.producer_account is None and old.producer_user is None
    with EmbeddedNats(server_name="mt5fleet-test-producer-upgrade", operator=old.server_mode()) as server:
        system, service = await _connect(server, old.system_user), await _connect(server, old.service_user)
        secrets = DirectorySecretStore(tmp_path / "secrets")
        try:
            exports = tuple(e for e in tenancy.platform_exports() if e.subject != tenancy.signal_wildcard())
            bare = dataclasses.replace(old.authority().claims, exports=exports)
            issued_at = nj.decode_account(old.app_account_jwt).issued_at + 1
            await na.push_account_jwt(system, nj.encode_account(bare, old.operator_signing, issued_at=issued_at),
                                      trusted_signers=old.trusted_signers)
            await bootstrap.bootstrap(service.jetstream(timeout=5), subjects.build_layout())
            await runtime._ensure_platform_account(old, secrets, system)
            state = await sp.ensure_producer_account(old, secrets, system)
            served = await na.fetch_account_jwt(system, state.account.public_key)
            assert served == state.jwt
            assert await sp.ensure_producer_account(old, secrets, system) == state  # nothing to push
            assert await na.fetch_account_jwt(system, state.account.public_key) == served
            creds = (await secrets.get(sp.PRODUCER_SECRET))[sp.CREDS_KEY].decode()
            producer = await nats.connect(server.url, user_credentials=RawCredentials(creds), inbox_prefix=INBOX,
                                          allow_reconnect=False)
            try:
                ack = await producer.jetstream(timeout=5).publish("signals.EURUSD", b"s", headers={"Nats-Msg-Id": "u"})
            finally:
                await producer.close()
            assert ack.stream == subjects.SIGNALS_STREAM
        finally:
            await system.close()
            await service.close()

