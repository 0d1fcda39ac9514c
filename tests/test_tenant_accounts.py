"""One NATS account per tenant, proven against a real nats-server in JWT operator mode.

The platform account (JetStream, every stream and bucket) carries the fleet's exports; the
tenant accounts alice and bob are built by ``operator.core.tenancy`` and pushed through
``$SYS.REQ.CLAIMS.UPDATE``. Their users have *no* permissions at all (allow everything):
what confines them is the account boundary alone. Each security test asserts the refusal
and that nothing in the platform changed (streams, their per-subject counts, consumers, KV
revisions). The operator issues them the same way (``operator/adapters/tenant_accounts.py``;
its own tests: test_nats_credentials, test_operator_handlers, test_operator_local).
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
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError, NotFoundError
from waiting import eventually

from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

SYMBOLS = {"alice": ("EURUSD", "GBPUSD"), "bob": ("USDJPY",)}
TENANT_SERVICES = tenancy.tenant_requests("alice")
STORED = tuple(channel for channel in subjects.Channel if channel.from_agent and channel.stored)
# Where an attacker would aim the server's answer (a PubAck, a catch-up page) to its request.
REPLY_TARGETS = (
    f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}", f"$JS.API.STREAM.DELETE.{subjects.COMMANDS_STREAM}",
    f"$JS.API.STREAM.PURGE.{subjects.config_stream_name()}",
    f"$JS.API.CONSUMER.DELETE.{subjects.SIGNALS_STREAM}.{subjects.adjust_consumer(0)}",
    "$KV.tc-config.bob", "$KV.tc-config.alice", "tc.bob.executions", "tc.bob.commands", "tc.bob.prices",
    "tc.alice.commands", "signals.EURUSD", "md.EURUSD",
    subjects.calendar_key_subject(),   # a forged calendar would open news windows for everyone (issue 17)
)
QUIET_S = 0.5  # how long "nothing arrives" is watched for


@dataclasses.dataclass(frozen=True)
class Fleet:
    server: EmbeddedNats
    chain: na.TrustChain
    users: dict[str, na.IssuedUser]  # alice, bob: users of their tenant accounts
    accounts: dict[str, nj.AccountClaims]  # their accounts, as the model built them


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    chain = na.create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-tenants", operator=chain.server_mode()) as server:
        users, accounts = asyncio.run(_set_up(server, chain))
        yield Fleet(server, chain, users, accounts)


async def _set_up(server: EmbeddedNats, chain: na.TrustChain) -> tuple[dict, dict]:
    """Platform exports pushed, streams bootstrapped, tenants pushed: what the operator will do."""
    issued_at = nj.decode_account(chain.app_account_jwt).issued_at + 1  # newer than the preload
    platform_jwt = nj.encode_account(tenancy.platform_account(chain.app_account_claims), chain.operator_signing,
                                     issued_at=issued_at)
    platform = tenancy.Platform(chain.app_account.public_key, chain.app_signing)
    system = await _connect(server, chain.system_user)
    service = await _connect(server, chain.service_user)
    users, accounts = {}, {}
    try:
        await na.push_account_jwt(system, platform_jwt, trusted_signers=chain.trusted_signers)
        await bootstrap.bootstrap(service.jetstream(timeout=5), subjects.build_layout())
        for user_id, symbols in SYMBOLS.items():
            key, signing = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.ACCOUNT)
            claims = tenancy.tenant_account(user_id, symbols, tenancy.TenantLimits.of_tier(DEFAULT_TIERS["free"]),
                                            tenant=key.public_key, platform=platform, issued_at=issued_at,
                                            signing_keys=(signing.public_key,))
            users[user_id] = await _push_tenant(system, chain, claims, signing, issued_at)
            accounts[user_id] = claims
        await _seed(service)
    finally:
        await system.close()
        await service.close()
    return users, accounts


async def _push_tenant(system: Any, chain: na.TrustChain, claims: nj.AccountClaims, signing: nj.NKey,
                       issued_at: int) -> na.IssuedUser:
    """Push the account JWT; return a user of it with no permissions at all (allow all)."""
    await na.push_account_jwt(system, nj.encode_account(claims, chain.operator_signing, issued_at=issued_at),
                              trusted_signers=chain.trusted_signers)
    authority = na.AccountAuthority(claims, account_signer=signing, operator_signer=chain.operator_signing)
    return authority.issue_user(claims.name, nj.UserPermissions())


async def _seed(service: Any) -> None:
    """Something in every stream an attacker could empty, and both tenants' config keys."""
    js = service.jetstream(timeout=5)
    for channel in (*STORED, subjects.Channel.COMMANDS):
        await js.publish(subjects.user_subject("carol", channel), b"carol")
    await js.publish("signals.EURUSD", b"signal")
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    for user_id in SYMBOLS:
        await kv.put(user_id, json.dumps({"user_id": user_id}).encode())


async def _connect(server: EmbeddedNats, user: na.IssuedUser, errors: list[str] | None = None) -> Any:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc).lower())

    return await nats.connect(server.url, user_credentials=RawCredentials(user.creds_text), allow_reconnect=False,
                              name=user.name, error_cb=on_error)


@pytest.fixture
async def service(fleet):
    nc = await _connect(fleet.server, fleet.chain.service_user)
    yield nc
    await nc.close()


@pytest.fixture
async def alice(fleet):
    nc = await _connect(fleet.server, fleet.users["alice"])
    yield nc
    await nc.close()


@pytest.fixture
async def bob(fleet):
    nc = await _connect(fleet.server, fleet.users["bob"])
    yield nc
    await nc.close()


async def platform_state(service: Any) -> dict[str, Any]:
    """Every stream with its per-subject counts and consumers, and every KV revision."""
    js = service.jetstream(timeout=5)
    streams = {}
    for info in await js.streams_info():
        name = info.config.name
        detail = await js.stream_info(name, subjects_filter=">")
        streams[name] = (detail.state.subjects or {}, sorted(c.name for c in await js.consumers_info(name)))
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    revisions = {user_id: (await kv.get(user_id)).revision for user_id in SYMBOLS}
    # Seeded (see _seed): a purge, a deleted stream or consumer would show in this state.
    assert streams[subjects.EXECUTIONS_STREAM][0]["tc.carol.executions"] == 1
    assert subjects.adjust_consumer(0) in streams[subjects.SIGNALS_STREAM][1]
    return {"streams": streams, "kv": revisions}


def _without_alices_own(state: dict[str, Any]) -> dict[str, Any]:
    """Alice's own publishes may land in her own subjects; nothing else may change."""
    own = {subjects.user_subject("alice", channel) for channel in STORED}
    streams = {name: ({s: n for s, n in counts.items() if s not in own}, consumers)
               for name, (counts, consumers) in state["streams"].items()}
    return {**state, "streams": streams}


# =========================================================================== what a tenant can do

async def test_a_tenant_publishes_into_the_platforms_streams_with_acks_and_dedupe(alice, service):
    js = alice.jetstream(timeout=5)
    for channel in STORED:
        subject = subjects.user_subject("alice", channel)
        ack = await js.publish(subject, channel.value.encode(), headers={"Nats-Msg-Id": f"a-{channel}"})
        again = await js.publish(subject, b"retry", headers={"Nats-Msg-Id": f"a-{channel}"})
        assert not ack.duplicate and again.duplicate and again.seq == ack.seq
        stored = await service.jetstream().get_msg(ack.stream, subject=subject, direct=True)
        assert stored.data == channel.value.encode()
    prices = await service.jetstream().stream_info(subjects.PRICES_STREAM, subjects_filter="tc.alice.prices")
    assert prices.state.subjects == {"tc.alice.prices": 1}


async def test_a_tenant_requests_its_catch_up_through_the_service_import(alice, service):
    async def answer(msg: Any) -> None:
        await msg.respond(f"page for {msg.subject}".encode())

    await service.subscribe(subjects.user_wildcard(subjects.Channel.CATCHUP), cb=answer)
    await service.flush()
    reply = await alice.request("tc.alice.catchup", b"", timeout=5)
    assert reply.data == b"page for tc.alice.catchup"


async def test_commands_reach_their_tenant_live_and_no_one_else(alice, bob, service):
    mine = await alice.subscribe("tc.alice.commands")
    everything = await bob.subscribe(">")
    await alice.flush()
    await bob.flush()
    js = service.jetstream()
    await js.publish("tc.alice.commands", b"for alice")
    await js.publish("tc.bob.commands", b"for bob")
    assert (await mine.next_msg(timeout=5)).data == b"for alice"
    first = await everything.next_msg(timeout=5)
    assert (first.subject, first.data) == ("tc.bob.commands", b"for bob")  # alice's, sent first, never came
    with pytest.raises(nats.errors.TimeoutError):
        await everything.next_msg(timeout=QUIET_S)


async def test_market_data_and_config_only_of_the_tenants_own(alice, service):
    seen = await alice.subscribe(">")
    await alice.flush()
    js = service.jetstream()
    kv = await js.key_value(subjects.CONFIG_BUCKET)
    for symbol in ("USDJPY", "EURUSD"):  # bob's tier, then alice's
        await js.publish(subjects.market_data_subject(symbol), symbol.encode())
    await kv.put("bob", json.dumps({"user_id": "bob"}).encode())
    await kv.put("alice", json.dumps({"user_id": "alice"}).encode())
    got = [(await seen.next_msg(timeout=5)).subject for _ in range(2)]
    assert got == ["md.EURUSD", "$KV.tc-config.alice"]
    with pytest.raises(nats.errors.TimeoutError):
        await seen.next_msg(timeout=QUIET_S)


async def test_a_tenant_direct_gets_its_own_config_key_and_no_other(alice, service):
    """The agent's config read on (re)connect, unchanged: ``js.get_msg`` of its key through
    the one JetStream service import; another key is not even routed to the platform."""
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    await kv.put("alice", json.dumps({"user_id": "alice", "v": 2}).encode())
    before = await platform_state(service)
    js = alice.jetstream(timeout=2)
    own = await js.get_msg(subjects.config_stream_name(), subject="$KV.tc-config.alice", direct=True)
    assert json.loads(own.data) == {"user_id": "alice", "v": 2}
    with pytest.raises(NoRespondersError):  # bob's key is not imported: nobody answers
        await js.get_msg(subjects.config_stream_name(), subject="$KV.tc-config.bob", direct=True)
    assert await platform_state(service) == before


# =========================================================================== what a tenant cannot do

async def test_a_tenant_cannot_publish_another_tenants_prices(alice, service):
    before = await platform_state(service)
    with pytest.raises(NoStreamResponseError):  # nats-py's name for "no responders" on a JetStream publish
        await alice.jetstream(timeout=1).publish("tc.bob.prices", b"forged")
    await alice.publish("tc.bob.prices", b"forged, no ack asked")
    await alice.flush()
    await asyncio.sleep(QUIET_S)
    with pytest.raises(NotFoundError):
        await service.jetstream().get_msg(subjects.PRICES_STREAM, subject="tc.bob.prices", direct=True)
    assert await platform_state(service) == before


async def test_answers_aimed_elsewhere_land_in_the_tenants_own_account(fleet, alice, service):
    """The reply-subject class: every allowed request subject x every target. Each answer
    arrives in alice's own account (on the subject she named), nowhere else."""
    async def answer(msg: Any) -> None:  # the catch-up service answers too
        await msg.respond(b"page")

    await service.subscribe(subjects.user_wildcard(subjects.Channel.CATCHUP), cb=answer)
    await service.flush()
    before = _without_alices_own(await platform_state(service))
    landed = await alice.subscribe(">")
    await alice.flush()
    combinations = [(subject, target) for subject in TENANT_SERVICES for target in REPLY_TARGETS]
    for subject, target in combinations:
        await alice.publish(subject, b"{}", reply=target)
    await alice.flush()
    answers: list[str] = []

    async def collect() -> int:
        while (msg := await next_or_none(landed)) is not None:
            if msg.subject in REPLY_TARGETS:
                answers.append(msg.subject)
        return len(answers)

    await eventually(collect, f"{len(combinations)} answers in alice's account", until=lambda n: n >= len(combinations))
    assert len(combinations) == 104 and sorted(answers) == sorted(t for _, t in combinations)
    assert _without_alices_own(await platform_state(service)) == before


async def test_a_tenant_has_no_jetstream_api_at_all(alice, service):
    before = await platform_state(service)
    calls = (f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}", f"$JS.API.STREAM.DELETE.{subjects.COMMANDS_STREAM}",
             f"$JS.API.STREAM.INFO.{subjects.EXECUTIONS_STREAM}", "$JS.API.STREAM.NAMES",
             f"$JS.API.CONSUMER.DELETE.{subjects.SIGNALS_STREAM}.{subjects.adjust_consumer(0)}",
             f"$JS.API.CONSUMER.CREATE.{subjects.COMMANDS_STREAM}",
             f"$JS.API.DIRECT.GET.{subjects.config_stream_name()}.$KV.tc-config.bob", "$JS.API.INFO")
    outcomes = {call: await refusal(alice, call) for call in calls}
    assert all(outcome in ("no responders", "jetstream not enabled for account") for outcome in outcomes.values()), \
        outcomes
    with pytest.raises(Exception):  # noqa: B017 - whichever way nats-py reports it, it must fail
        await alice.jetstream(timeout=1).stream_info(subjects.EXECUTIONS_STREAM)
    assert await platform_state(service) == before




async def test_the_server_serves_the_accounts_the_model_built(fleet):
    system = await _connect(fleet.server, fleet.chain.system_user)
    try:
        platform = nj.decode_account(await na.fetch_account_jwt(system, fleet.chain.app_account.public_key)).claims
        for user_id, built in fleet.accounts.items():
            served = nj.decode_account(await na.fetch_account_jwt(system, built.subject)).claims
            assert served == built and not served.limits.jetstream.enabled
            for imported in served.imports:
                assert nj.verify_import(imported, importer=served.subject, exporter=platform) is not None
            assert nj.decode_user(fleet.users[user_id].jwt).claims.issuer_account == built.subject
    finally:
        await system.close()


async def test_the_server_refuses_an_account_carrying_another_tenants_token(fleet, service):
    """mallory's account (as a buggy or tampered signer might make it) imports tc.bob.prices
    with bob's own activation token: the server refuses the account JWT itself."""
    bobs = next(i for i in fleet.accounts["bob"].imports if i.subject == "tc.bob.prices")
    before = await platform_state(service)
    with pytest.raises(na.ClaimsUpdateError, match="activation token doesn't match account"):
        await _mallory(fleet, bobs)
    assert await platform_state(service) == before


async def test_the_server_does_not_honour_an_import_without_a_token(fleet, service):
    """Accepted as an account, but the platform's export requires a token: nothing flows."""
    bobs = next(i for i in fleet.accounts["bob"].imports if i.subject == "tc.bob.prices")
    user = await _mallory(fleet, dataclasses.replace(bobs, token=""))
    before = await platform_state(service)
    mallory = await _connect(fleet.server, user)
    try:
        with pytest.raises(NoStreamResponseError):
            await mallory.jetstream(timeout=1).publish("tc.bob.prices", b"forged")
    finally:
        await mallory.close()
    with pytest.raises(NotFoundError):
        await service.jetstream().get_msg(subjects.PRICES_STREAM, subject="tc.bob.prices", direct=True)
    assert await platform_state(service) == before


async def _mallory(fleet: Fleet, imported: nj.Import) -> na.IssuedUser:
    key, signing = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.ACCOUNT)
    claims = nj.AccountClaims(subject=key.public_key, name="mallory", signing_keys=(signing.public_key,),
                              limits=fleet.accounts["bob"].limits, imports=(imported,))
    system = await _connect(fleet.server, fleet.chain.system_user)
    try:
        issued_at = nj.decode_account(fleet.chain.app_account_jwt).issued_at + 1
        return await _push_tenant(system, fleet.chain, claims, signing, issued_at)
    finally:
        await system.close()
