"""Per-user NATS credentials against a real nats-server in JWT operator mode (SPEC §7), as
the operator issues them: each user inside its own tenant account (``tenant_accounts``),
whose imports are all that reaches the platform account.

A user can do what its agent does (publish its own channels, read its commands live and
through the catch-up service, read its own tc-config key, read its tier's md.<symbol>) and
nothing else: no JetStream consumer API at all. A direct refusal is proven by the server's
own "Permissions Violation" error for the exact subject (the user's grants, defence in
depth), and what the account boundary stops by the platform's state not changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from agent_harness import AgentHarness
from intruder_kit import next_or_none
from nats.aio.client import RawCredentials
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from waiting import eventually, wait_for

from mt5fleet.client.adapters.catchup import CatchupFailed, catch_up
from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.adapters.jwt_issuer import tenant_limits
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts, TenantState
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import permissions as pm
from mt5fleet.operator.core import tenancy
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, OperatorMode
from mt5fleet.proto.v1 import catchup_pb2, config_pb2, heartbeat_pb2
from mt5fleet.workers.app.catchup_service import CatchupService

TIER_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY")
TIER = nj.NatsLimits(payload=256 * 1024, subs=50, data=-1)
# A refused request gets no reply at all (the server drops it and sends -ERR): the client
# times out. The -ERR naming the subject is the proof; this only bounds the wait for it.
REFUSED = (nats.errors.TimeoutError, asyncio.TimeoutError)
REFUSED_AFTER_S = 0.5
KV_STREAM = pm.config_stream()


# =========================================================================== pure: permissions

def test_the_exact_grants_of_one_user():
    access = pm.user_access("alice", ["USDJPY", "EURUSD", "EURUSD"], TIER)
    assert access.publish == (
        "tc.alice.prices", "tc.alice.account", "tc.alice.symbols", "tc.alice.executions", "tc.alice.heartbeat",
        "tc.alice.catchup",
        "$JS.API.DIRECT.GET.KV_tc-config.$KV.tc-config.alice",
        "$JS.API.DIRECT.GET.KV_calendar.$KV.calendar.events",   # the shared calendar, read-only (issue 17)
    )
    assert access.subscribe == ("tc.alice.commands", "_INBOX_alice.>", "md.EURUSD", "md.USDJPY",
                                "$KV.tc-config.alice", "$KV.calendar.events")
    assert access.permissions.pub.deny == access.permissions.sub.deny == ()
    assert access.limits == nj.NatsLimits(payload=256 * 1024, subs=50, data=-1)


def test_inside_its_tenant_account_a_user_reads_md_by_the_accounts_imports():
    """The user's grants in its own account: the same, but ``md.*`` (the account imports
    only its tier's symbols), so a symbol or tier change never needs a new user JWT."""
    access = pm.user_access("alice", ["USDJPY", "EURUSD"], TIER)
    assert access.md_symbols == ("EURUSD", "USDJPY")
    assert access.tenant_permissions.pub == access.permissions.pub
    assert access.tenant_permissions.sub.allow == ("tc.alice.commands", "_INBOX_alice.>", "md.*",
                                                   "$KV.tc-config.alice", "$KV.calendar.events")
    assert pm.user_access("alice", ["GBPUSD"], TIER).tenant_permissions == access.tenant_permissions
    assert "md.*" not in pm.user_access("alice", (), TIER).tenant_permissions.sub.allow


def test_tenant_state_round_trips_and_keeps_its_seeds_out_of_repr():
    state = TenantState.create()
    state = TenantState(state.account, state.signing, ("EURUSD",), tenancy.TenantLimits(2, 50, 1024, -1),
                        {"*": 5}, "jwt", 7)
    assert TenantState.from_json(state.to_json()) == state
    for seed in (state.account.seed, state.signing.seed):
        assert seed not in repr(state) and seed in state.to_json()  # the secret store's, never a log's


def test_names_match_the_agent_code():
    assert pm.inbox_prefix("alice") == subjects.inbox_prefix("alice") == "_INBOX_alice"  # client/agent.py
    assert pm.inbox_subjects("alice") == "_INBOX_alice.>"
    assert pm.config_stream() == "KV_tc-config"


def test_no_grant_is_a_wildcard_beyond_the_users_own_tokens():
    access = pm.user_access("alice", TIER_SYMBOLS)
    calendar_pub, calendar_sub = pm.calendar_grants()   # the one key every tenant reads, nothing else
    for grant in (*access.publish, *access.subscribe):
        assert "alice" in grant or grant.startswith("md.") or grant in (*calendar_pub, *calendar_sub), grant
        assert "*" not in grant
        assert not grant.endswith(">") or grant == "_INBOX_alice.>"
        assert not grant.startswith("$JS.API.CONSUMER") and not grant.startswith("$JS.ACK"), grant


def test_a_tier_too_small_for_the_agent_is_refused():
    with pytest.raises(ValueError, match="needs 7"):
        pm.user_access("alice", TIER_SYMBOLS, nj.NatsLimits(subs=6))
    with pytest.raises(subjects.InvalidName):
        pm.user_access("Alice", TIER_SYMBOLS)
    with pytest.raises(subjects.InvalidName):
        pm.user_access("alice", ["eurusd"])


# =========================================================================== pure: authority

def test_authority_state_round_trips_without_secrets():
    chain = na.create_trust_chain()
    clock = iter(range(1000, 2000)).__next__
    authority = chain.authority(clock=clock)
    user = authority.issue_user("alice", pm.user_access("alice", TIER_SYMBOLS).permissions)
    authority.revoke(user.public_key)
    first = nj.decode_account(authority.account_jwt())
    state = authority.state_json()
    for secret in (chain.app_signing.seed, chain.operator_signing.seed, user.seed):
        assert secret not in state and secret not in repr(user) and secret not in repr(chain)
    restored = na.AccountAuthority.from_state_json(state, account_signer=chain.app_signing,
                                                   operator_signer=chain.operator_signing, clock=lambda: 0)
    assert restored.claims == authority.claims and user.public_key in restored.claims.revocations
    # Even with a clock that went backwards, the next account JWT is issued strictly later.
    assert nj.decode_account(restored.account_jwt()).issued_at > first.issued_at
    assert na.TrustChain.from_json(chain.to_json()) == chain


def test_issued_user_is_signed_by_the_account_signing_key():
    chain = na.create_trust_chain()
    access = pm.user_access("alice", TIER_SYMBOLS, TIER)
    user = chain.authority().issue_user("alice", access.permissions, access.limits)
    decoded = nj.decode_user(user.jwt, trusted_account=chain.app_account_claims)
    assert decoded.claims.permissions == access.permissions and decoded.claims.limits == access.limits
    assert decoded.issuer == chain.app_signing.public_key
    assert decoded.claims.issuer_account == chain.app_account.public_key
    assert nj.parse_creds(user.creds_text) == (user.jwt, user.seed)


def test_a_refused_update_reply_becomes_a_clear_error():
    reply = json.dumps({"error": {"account": "A", "code": 500, "description": "jwt validation failed - boom"}})
    with pytest.raises(na.ClaimsUpdateError, match="refused the JWT of account A: jwt validation failed - boom"):
        na._update_result("A", reply.encode())
    assert na._update_result("A", b'{"data": {"code": 200, "message": "jwt updated"}}') == "jwt updated"


class _FakeSystemConnection:
    """Answers the update with 200 but keeps serving ``served`` (another writer won)."""

    def __init__(self, served: str) -> None:
        self.served = served

    async def request(self, subject: str, payload: bytes, timeout: float) -> Any:
        if subject == na.CLAIMS_UPDATE_SUBJECT:
            return _Reply(b'{"data": {"code": 200, "message": "jwt updated"}}')
        return _Reply(self.served.encode())


@dataclass
class _Reply:
    data: bytes


async def test_an_update_the_server_does_not_serve_afterwards_raises():
    chain = na.create_trust_chain()
    authority = chain.authority()
    with pytest.raises(na.ClaimsUpdateError, match="still serves another JWT"):
        await na.push_account_jwt(_FakeSystemConnection(chain.app_account_jwt), authority.account_jwt(),
                                  timeout_s=0.2)


def test_operator_mode_configuration():
    chain = na.create_trust_chain()
    lines = chain.server_mode(resolver_dir=Path("/var/lib/nats/jwt")).config_lines(Path("/unused"))
    assert lines[:2] == [f'operator: "{chain.operator_jwt}"', f'system_account: "{chain.system_account.public_key}"']
    assert "  type: full" in lines and '  dir: "/var/lib/nats/jwt"' in lines and "  allow_delete: true" in lines
    assert f'  {chain.app_account.public_key}: "{chain.app_account_jwt}"' in lines
    assert f'  {chain.system_account.public_key}: "{chain.system_account_jwt}"' in lines
    bare = OperatorMode(operator_jwt=chain.operator_jwt, system_account=chain.system_account.public_key)
    assert not any("resolver_preload" in line for line in bare.config_lines(Path("/store/jwt")))


# =========================================================================== helpers

class Conn:
    """One user's connection; the server's -ERR lines (nats-py lower-cases them) are kept."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.errors: list[str] = []
        self._changed = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())
        self._changed.set()

    async def wait_error(self, fragment: str, timeout: float = 5.0) -> None:
        fragment = fragment.lower()

        async def until_seen() -> None:
            while not any(fragment in error for error in self.errors):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until_seen(), timeout)
        except TimeoutError:
            raise AssertionError(f"no server error containing {fragment!r}; got {self.errors}") from None

    async def refused_publish(self, subject: str) -> None:
        await self.wait_error(f'permissions violation for publish to "{subject}"')

    async def refused_subscription(self, subject: str) -> None:
        await self.wait_error(f'permissions violation for subscription to "{subject}"')

    def js(self, timeout: float = 5.0) -> Any:
        return self.nc.jetstream(timeout=timeout)


async def connect(server: EmbeddedNats, user: na.IssuedUser, tmp_path: Path, *, inbox: str | None = None,
                  **options: Any) -> Conn:
    """As the agent connects: natsconn with a creds file and its own inbox prefix."""
    conn = Conn()
    creds = na.write_creds(tmp_path / f"{user.public_key}.creds", user)
    settings = natsconn.NatsSettings(servers=(server.url,), name=user.name, creds_file=str(creds), reconnect=False,
                                     connect_timeout_s=2)
    extra = {"inbox_prefix": inbox} if inbox else {}
    conn.nc = await natsconn.connect(settings, error_cb=conn.on_error, **extra, **options)
    return conn


@contextlib.asynccontextmanager
async def tenant_accounts(server: EmbeddedNats, chain: na.TrustChain, tmp_path: Path) -> AsyncIterator[TenantAccounts]:
    """The operator's tenant authority, pushing through a system-user connection."""
    system = await connect(server, chain.system_user, tmp_path)
    try:
        yield TenantAccounts(chain.platform, chain.operator_signing, system.nc,
                             DirectorySecretStore(tmp_path / "tenants"), trusted_signers=chain.trusted_signers)
    finally:
        await system.nc.close()


async def issue(tenants: TenantAccounts, user_id: str, symbols: tuple[str, ...] = TIER_SYMBOLS) -> na.IssuedUser:
    """As the operator issues an agent's user: its account first, then the user inside it."""
    access = pm.user_access(user_id, symbols, TIER)
    await tenants.ensure(user_id, access.md_symbols, tenant_limits(access))
    return await tenants.issue_user(user_id, access.tenant_permissions)


async def as_agent(server: EmbeddedNats, chain: na.TrustChain, user_id: str, tmp_path: Path,
                   symbols: tuple[str, ...] = TIER_SYMBOLS) -> Conn:
    async with tenant_accounts(server, chain, tmp_path) as tenants:
        user = await issue(tenants, user_id, symbols)
    return await connect(server, user, tmp_path, inbox=pm.inbox_prefix(user_id))


async def platform_state(service: Conn) -> dict[str, Any]:
    """Every stream's per-subject counts and consumers, and the config bucket's revisions."""
    js = service.js()
    streams = {}
    for info in await js.streams_info():
        detail = await js.stream_info(info.config.name, subjects_filter=">")
        streams[info.config.name] = (detail.state.subjects or {}, await consumers_of(js, info.config.name))
    return streams


def _without(state: dict[str, Any], subject: str) -> dict[str, Any]:
    return {name: ({s: n for s, n in counts.items() if s != subject}, consumers)
            for name, (counts, consumers) in state.items()}


async def consumers_of(js: Any, stream: str) -> list[str]:
    return sorted(info.name for info in await js.consumers_info(stream))


@pytest.fixture
async def service(operator_nats_server, nats_trust_chain, tmp_path):
    conn = await connect(operator_nats_server, nats_trust_chain.service_user, tmp_path)
    yield conn
    await conn.nc.close()


@pytest.fixture
async def alice(operator_nats_server, nats_trust_chain, tmp_path):
    conn = await as_agent(operator_nats_server, nats_trust_chain, "alice", tmp_path)
    yield conn
    await conn.nc.close()


@pytest.fixture
async def catchup(service):
    """The platform's catch-up service (``mt5fleet worker catchup``) on the service user's connection."""
    server = CatchupService(service.nc)
    await server.start()
    yield server
    await server.stop()


async def consumers(service: Conn) -> dict[str, set[str]]:
    """Every consumer of the streams a user could aim at: proof that nothing was created or deleted."""
    js = service.js()
    return {stream: {info.name for info in await js.consumers_info(stream)}
            for stream in (subjects.COMMANDS_STREAM, subjects.SIGNALS_STREAM, KV_STREAM)}


# =========================================================================== what a user can do

async def test_the_user_publishes_its_own_channels_to_jetstream(alice, service):
    js = alice.js(timeout=5)
    for channel in subjects.Channel:
        if channel.from_agent and channel.stored:
            subject = subjects.user_subject("alice", channel)
            ack = await js.publish(subject, channel.value.encode(), headers={"Nats-Msg-Id": f"own-{channel}"})
            stored = await service.js().get_msg(ack.stream, subject=subject, direct=True)
            assert stored.data == channel.value.encode()
    assert alice.errors == []


async def test_the_user_reads_its_commands_live_and_through_catch_up(alice, service, catchup):
    commands = subjects.user_subject("alice", subjects.Channel.COMMANDS)
    live = await alice.nc.subscribe(commands)  # the agent's live path: a plain subscription
    await alice.nc.flush()
    await service.js().publish(commands, b"command-1", headers={"Nats-Msg-Id": "alice-command-1"})
    assert (await live.next_msg(timeout=5)).data == b"command-1"
    before = await consumers(service)
    caught: list[bytes] = []
    read = await catch_up(alice.nc, "alice", 0, caught.append)  # a request on tc.alice.catchup
    assert read >= 1 and b"command-1" in caught
    assert await consumers(service) == before  # the service reads by direct get: no consumer per user
    assert alice.errors == []


async def test_the_user_reads_its_own_config_key(alice, service):
    kv = await service.js().key_value(subjects.CONFIG_BUCKET)
    await kv.put("alice", b"config-v1")
    key = pm.config_key_subject("alice")
    latest = await alice.js().get_msg(KV_STREAM, subject=key, direct=True)
    assert latest.data == b"config-v1"
    live = await alice.nc.subscribe(key)
    await alice.nc.flush()
    await kv.put("alice", b"config-v2")
    assert (await live.next_msg(timeout=5)).data == b"config-v2"
    assert alice.errors == []


async def test_the_user_reads_market_data_of_its_tier(alice, service):
    subscription = await alice.nc.subscribe(subjects.market_data_subject("EURUSD"))
    await alice.nc.flush()
    await service.nc.publish(subjects.market_data_subject("EURUSD"), b"md")
    await service.nc.flush()
    try:
        received = await subscription.next_msg(timeout=10)
    except nats.errors.TimeoutError:
        raise AssertionError(f"md.EURUSD not delivered; alice's server errors: {alice.errors}") from None
    assert received.data == b"md"
    assert alice.errors == []


# =========================================================================== what it cannot do

async def test_cannot_read_another_users_commands(alice, service):
    for subject in ("tc.bob.commands", "tc.*.commands", "tc.>", ">", "_INBOX_bob.>", "_INBOX.>"):
        await alice.nc.subscribe(subject)
        await alice.refused_subscription(subject)


async def test_cannot_request_another_users_catch_up(alice, service, catchup):
    await service.js().publish("tc.bob.commands", b"bob-command", headers={"Nats-Msg-Id": "bob-command-1"})
    caught: list[bytes] = []
    with pytest.raises(CatchupFailed, match="timeout"):  # the server drops the request: no answer
        await catch_up(alice.nc, "bob", 0, caught.append, timeout_s=REFUSED_AFTER_S)
    await alice.refused_publish("tc.bob.catchup")
    for subject in ("tc.*.catchup", "tc.>"):
        await alice.nc.publish(subject, b"")
        await alice.refused_publish(subject)
    assert caught == [] and catchup.metrics.requests.labels("served")._value.get() == 0


async def test_a_catch_up_reply_returns_only_into_the_requesters_account(alice, service, catchup):
    """NATS does not check a request's reply subject; through the service import the
    server answers into alice's own account, wherever she aims it (issue 10): the service
    answers, and nothing reaches bob's commands or the JetStream API in the platform."""
    bob_commands = await service.nc.subscribe("tc.bob.commands")
    await service.nc.flush()
    before = await platform_state(service)
    request = catchup_pb2.CatchupRequest(since_ms=0).SerializeToString()
    aimed = ("tc.bob.commands", "$JS.API.STREAM.PURGE.TC_EXECUTIONS", "_INBOX_bob.x", "_INBOX_alicex.y")
    for reply in aimed:
        await alice.nc.publish("tc.alice.catchup", request, reply=reply)
    await alice.nc.flush()
    await wait_for(lambda: catchup.metrics.requests.labels("served")._value.get() == 4, "the four answered")
    with pytest.raises(nats.errors.TimeoutError):
        await bob_commands.next_msg(timeout=REFUSED_AFTER_S)
    assert await platform_state(service) == before and alice.errors == []


async def test_the_catch_up_service_refuses_a_foreign_reply_from_inside_the_platform(service, catchup):
    """Defence in depth: a request made inside the platform account (no import to rewrite
    its reply) is answered only on the user's own inbox."""
    request = catchup_pb2.CatchupRequest(since_ms=0).SerializeToString()
    before = await platform_state(service)
    for reply in ("tc.bob.commands", "$JS.API.STREAM.PURGE.TC_EXECUTIONS", "_INBOX_bob.x"):
        await service.nc.publish("tc.alice.catchup", request, reply=reply)
    refused = catchup.metrics.refused.labels("reply_subject")
    await wait_for(lambda: refused._value.get() == 3, "the three requests refused")
    assert await platform_state(service) == before


async def test_cannot_publish_another_users_prices(alice, service):
    await alice.nc.publish("tc.bob.prices", b"forged")
    await alice.refused_publish("tc.bob.prices")
    with pytest.raises(REFUSED):
        await alice.js(REFUSED_AFTER_S).publish("tc.bob.executions", b"forged")
    await alice.refused_publish("tc.bob.executions")
    for subject in ("tc.alice.commands", "md.EURUSD", "signals.EURUSD", "$KV.tc-config.alice"):
        await alice.nc.publish(subject, b"forged")  # nor commands, market data, signals or config
        await alice.refused_publish(subject)
    with pytest.raises(NotFoundError):  # refused before JetStream saw it
        await service.js().get_msg(subjects.PRICES_STREAM, subject="tc.bob.prices", direct=True)


async def test_market_data_outside_the_tier_never_arrives(operator_nats_server, nats_trust_chain, service, tmp_path):
    """Carol's account imports md.EURUSD only: her ``md.*`` subscription (her grant) gets
    nothing else; ``>`` and the correlations are refused by her grants."""
    carol = await as_agent(operator_nats_server, nats_trust_chain, "carol", tmp_path, symbols=("EURUSD",))
    try:
        md = await carol.nc.subscribe("md.*")
        await carol.nc.flush()
        received: list[bytes] = []

        async def imported() -> bool:
            # A freshly pushed account's imports take effect on the server a moment later:
            # publish every symbol again until hers arrives, keeping everything that does.
            for symbol in ("XAUUSD", "GBPUSD", "EURUSD"):
                await service.nc.publish(subjects.market_data_subject(symbol), symbol.encode())
            await service.nc.flush()
            while (msg := await next_or_none(md)) is not None:
                received.append(msg.data)
            return b"EURUSD" in received

        await wait_for(imported, "md.EURUSD through carol's import")
        assert set(received) == {b"EURUSD"}
        for subject in (">", subjects.CORRELATIONS_SUBJECT):
            await carol.nc.subscribe(subject)
            await carol.refused_subscription(subject)
    finally:
        await carol.nc.close()


async def test_cannot_manage_streams(alice, service):
    js = alice.js(REFUSED_AFTER_S)
    attempts = {
        "$JS.API.STREAM.CREATE.EVIL": lambda: js.add_stream(name="EVIL", subjects=["evil.>"]),
        "$JS.API.STREAM.DELETE.TC_COMMANDS": lambda: js.delete_stream(subjects.COMMANDS_STREAM),
        "$JS.API.STREAM.PURGE.TC_COMMANDS": lambda: js.purge_stream(subjects.COMMANDS_STREAM),
        "$JS.API.STREAM.INFO.TC_COMMANDS": lambda: js.stream_info(subjects.COMMANDS_STREAM),
        "$JS.API.INFO": lambda: js.account_info(),
    }
    for subject, attempt in attempts.items():
        with pytest.raises(REFUSED):
            await attempt()
        await alice.refused_publish(subject)
    assert (await service.js().stream_info(subjects.COMMANDS_STREAM)).config.name == subjects.COMMANDS_STREAM


async def test_cannot_create_or_touch_any_consumer(alice, service):
    """Catch-up goes through the catch-up service: a user has no consumer API grant left,
    not even for the consumer its agent used to create itself."""
    before = await consumers(service)
    js = alice.js(REFUSED_AFTER_S)
    attempts = {
        # the per-user catch-up consumer of the previous design, with its own filter
        "$JS.API.CONSUMER.CREATE.TC_COMMANDS.catchup-alice.tc.alice.commands":
            lambda: js.add_consumer(subjects.COMMANDS_STREAM, name="catchup-alice", filter_subject="tc.alice.commands"),
        "$JS.API.CONSUMER.CREATE.TC_COMMANDS.catchup-bob.tc.bob.commands":
            lambda: js.add_consumer(subjects.COMMANDS_STREAM, name="catchup-bob", filter_subject="tc.bob.commands"),
        # an unnamed (ephemeral) consumer and a durable one
        "$JS.API.CONSUMER.CREATE.TC_COMMANDS":
            lambda: js.add_consumer(subjects.COMMANDS_STREAM, filter_subject="tc.alice.commands"),
        "$JS.API.CONSUMER.DURABLE.CREATE.TC_COMMANDS.mine":
            lambda: js.add_consumer(subjects.COMMANDS_STREAM, durable_name="mine", deliver_subject="_INBOX_alice.x"),
        "$JS.API.CONSUMER.CREATE.SIGNALS.catchup-alice.signals.EURUSD":
            lambda: js.add_consumer(subjects.SIGNALS_STREAM, name="catchup-alice", filter_subject="signals.EURUSD"),
        # the workers' durables
        "$JS.API.CONSUMER.INFO.SIGNALS.adjust-p0": lambda: js.consumer_info(subjects.SIGNALS_STREAM, "adjust-p0"),
        "$JS.API.CONSUMER.DELETE.SIGNALS.adjust-p0": lambda: js.delete_consumer(subjects.SIGNALS_STREAM, "adjust-p0"),
        "$JS.API.CONSUMER.DELETE.TC_COMMANDS.catchup-alice":
            lambda: js.delete_consumer(subjects.COMMANDS_STREAM, "catchup-alice"),
        "$JS.API.CONSUMER.LIST.TC_COMMANDS": lambda: js.consumers_info(subjects.COMMANDS_STREAM),
    }
    for subject, attempt in attempts.items():
        with pytest.raises(REFUSED):
            await attempt()
        await alice.refused_publish(subject)
    for subject in ("$JS.API.CONSUMER.MSG.NEXT.SIGNALS.adjust-p0",
                    "$JS.API.CONSUMER.MSG.NEXT.TC_COMMANDS.catchup-alice"):
        await alice.nc.publish(subject, b'{"batch": 1}')
        await alice.refused_publish(subject)
    assert await consumers(service) == before  # refused, and nothing created or deleted


async def test_cannot_watch_or_read_another_users_config(alice, service):
    kv = await service.js().key_value(subjects.CONFIG_BUCKET)
    await kv.put("bob", b"bob-secret-config")
    bob_key = pm.config_key_subject("bob")
    await alice.nc.subscribe(bob_key)
    await alice.refused_subscription(bob_key)
    with pytest.raises(REFUSED):
        await alice.js(REFUSED_AFTER_S).get_msg(KV_STREAM, subject=bob_key, direct=True)
    await alice.refused_publish(f"$JS.API.DIRECT.GET.{KV_STREAM}.{bob_key}")
    # nats-py's kv.watch: an unnamed consumer (filter only in the body), so refused for any key
    watcher = KeyValue(name=subjects.CONFIG_BUCKET, stream=KV_STREAM, pre=f"$KV.{subjects.CONFIG_BUCKET}.",
                       js=alice.js(REFUSED_AFTER_S), direct=True)
    with pytest.raises(REFUSED):
        await watcher.watch("bob")
    await alice.refused_publish(f"$JS.API.CONSUMER.CREATE.{KV_STREAM}")
    # its own direct get cannot be turned into a get of another key or sequence
    own = f"$JS.API.DIRECT.GET.{KV_STREAM}.{pm.config_key_subject('alice')}"
    for body in ({"last_by_subj": bob_key}, {"next_by_subj": bob_key}, {"seq": 1}, {"multi_last": [bob_key]}):
        reply = await alice.nc.request(own, json.dumps(body).encode(), timeout=5)
        assert reply.data == b"" and reply.headers.get("Status") == "408", body


async def test_nats_py_kv_watch_is_refused_even_for_the_own_key(alice, service):
    """Documents why the agent must read its config with a plain subscription plus a direct
    get (permissions.config_grants): js.key_value() asks STREAM.INFO, kv.watch() creates an
    unnamed consumer; neither can be limited to one key."""
    with pytest.raises(REFUSED):
        await alice.js(REFUSED_AFTER_S).key_value(subjects.CONFIG_BUCKET)
    await alice.refused_publish(f"$JS.API.STREAM.INFO.{KV_STREAM}")


async def test_reply_subjects_aimed_at_the_platform_change_nothing(alice, service):
    """The issue-10 attacks, with the credentials the operator issues: a JetStream ack or a
    config direct get answered to bob's commands, the JetStream API or another config key.
    Each answer lands in alice's own account; the platform is unchanged."""
    bob_commands = await service.nc.subscribe("tc.bob.commands")
    await service.nc.flush()
    kv = await service.js().key_value(subjects.CONFIG_BUCKET)
    await kv.put("alice", b"alice-config")
    before = await platform_state(service)
    targets = ("tc.bob.commands", f"$JS.API.STREAM.PURGE.{subjects.EXECUTIONS_STREAM}",
               f"$JS.API.CONSUMER.DELETE.{subjects.SIGNALS_STREAM}.{subjects.adjust_consumer(0)}",
               "$KV.tc-config.bob", "$KV.tc-config.alice")
    direct_get = f"$JS.API.DIRECT.GET.{KV_STREAM}.{pm.config_key_subject('alice')}"
    for target in targets:
        await alice.nc.publish("tc.alice.heartbeat", b"beat", reply=target)
        await alice.nc.publish(direct_get, b"", reply=target)
    await alice.nc.flush()
    with pytest.raises(nats.errors.TimeoutError):
        await bob_commands.next_msg(timeout=REFUSED_AFTER_S)
    own = "tc.alice.heartbeat"  # her heartbeats land in her own subject: nothing else may change
    assert _without(await platform_state(service), own) == _without(before, own)
    assert (await kv.get("alice")).value == b"alice-config" and alice.errors == []


# =========================================================================== the real agent

class CredentialedHarness(AgentHarness):
    """The agent harness with the agent on a user's creds and the test client on the service user's."""

    def __init__(self, server: EmbeddedNats, tmp_path: Path, *, agent_creds: Path, service_creds: str) -> None:
        super().__init__(server, tmp_path, user_id="dave", nats={"creds_file": str(agent_creds)})
        self.service_creds = service_creds

    async def __aenter__(self) -> CredentialedHarness:
        self.nc = await nats.connect(self.server.url, user_credentials=RawCredentials(self.service_creds))
        self.js = self.nc.jetstream()
        await self.nc.subscribe(subjects.user_subject(self.user_id, subjects.Channel.EXECUTIONS), cb=self._on_report)
        await self.start_catchup_service()  # as the platform runs it: on the service user's creds
        return self


async def test_the_real_agent_works_on_its_credentials(operator_nats_server, nats_trust_chain, tmp_path):
    async with tenant_accounts(operator_nats_server, nats_trust_chain, tmp_path) as tenants:
        creds = na.write_creds(tmp_path / "dave.creds", await issue(tenants, "dave"))
    async with CredentialedHarness(operator_nats_server, tmp_path, agent_creds=creds,
                                   service_creds=nats_trust_chain.service_user.creds_text) as harness:
        missed = harness.command()
        await harness.send(missed)  # stored before the agent connects: delivered by catch-up
        await harness.start_agent()
        assert (await harness.report(missed.command_id)).command_id == missed.command_id
        live = harness.command()
        await harness.send(live)
        assert (await harness.report(live.command_id)).command_id == live.command_id
        heartbeat = subjects.user_subject("dave", subjects.Channel.HEARTBEAT)
        # The agent publishes on its own clock: not found until its first heartbeat.
        stored = await eventually(lambda: harness.js.get_msg(subjects.HEARTBEAT_STREAM, subject=heartbeat, direct=True),
                                  f"the agent's heartbeat on {heartbeat}", retry_on=(NotFoundError,))
        assert heartbeat_pb2.Heartbeat.FromString(stored.data).user_id == "dave"
        assert harness.agent.market_data.subscribed == frozenset()  # md follows the server's config, none yet
        assert [r.command_id for r in await harness.stored_reports()] == [missed.command_id, live.command_id]
        # The operator's config reaches the agent live through what its permissions grant.
        kv = await harness.js.key_value(subjects.CONFIG_BUCKET)
        config = config_pb2.ClientConfig(user_id="dave", tier_name="pro", trading_symbols=["EURUSD", "GBPUSD"])
        config.risk.max_risk_per_trade = 1.0
        await kv.put("dave", config.SerializeToString())
        await wait_for(lambda: harness.agent.effective.tier == "pro", "config applied under the user's creds")
        await wait_for(lambda: harness.agent.market_data.subscribed == {"EURUSD", "GBPUSD"}, "the config's md followed")


# =========================================================================== revocation

@pytest.fixture
async def own_server(tmp_path):
    """A server of the test's own (it is restarted), bootstrapped by the service user."""
    chain = na.create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-revoke", store_dir=tmp_path / "store",
                      operator=chain.server_mode()) as server:
        service = await connect(server, chain.service_user, tmp_path)
        await bootstrap.bootstrap(service.js(timeout=5), subjects.build_layout())
        await service.nc.close()
        yield server, chain


async def test_a_revoked_user_is_cut_off_and_stays_out(own_server, tmp_path):
    """Revoking re-signs only erin's tenant account: the server closes her connection at
    once and refuses her JWT, across a restart; frank's account is not touched."""
    server, chain = own_server
    async with tenant_accounts(server, chain, tmp_path) as tenants:
        erin, frank = await issue(tenants, "erin"), await issue(tenants, "frank")
        live, events, reasons = await _live_connection(server, erin, tmp_path)
        assert (await live.js(timeout=5).publish("tc.erin.prices", b"before")).stream == subjects.PRICES_STREAM
        franks_account = await tenants.account_key("frank")
        bystander = await connect(server, frank, tmp_path)

        await tenants.revoke("erin", erin.public_key)
        # The server closes the live connection at once ("-ERR 'User Authentication Revoked'"),
        # and refuses every reconnect until the client gives up.
        await asyncio.wait_for(events["closed"].wait(), 10)
        assert reasons[0] == "disconnected: nats: user authentication revoked", reasons
        assert not events["reconnected"].is_set() and live.nc.is_closed
        with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
            await connect(server, erin, tmp_path)
        # Others are untouched, and new credentials (a new key) for the same user work.
        assert bystander.nc.is_connected and await tenants.account_key("frank") == franks_account
        await bystander.nc.close()
        renewed = await connect(server, await issue(tenants, "erin"), tmp_path)
        await renewed.nc.close()

    server.restart()  # the revocation lives in the resolver's directory, not in memory
    with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
        await connect(server, erin, tmp_path)


async def test_a_retired_signing_key_stays_retired_across_a_restart(own_server, tmp_path):
    """Rotating gus's signing key: a user JWT from the previous key works only in the grace;
    once retired it is refused, also after a server restart (the account JWT in the
    resolver's directory no longer lists the key). The rotation state outlives the process."""
    server, chain = own_server
    access = pm.user_access("gus", TIER_SYMBOLS, TIER)
    async with tenant_accounts(server, chain, tmp_path) as tenants:
        old = await issue(tenants, "gus")
        await tenants.ensure("gus", access.md_symbols, tenant_limits(access), rotation="first")
        renewed = await tenants.issue_user("gus", access.tenant_permissions, key=nj.NKey.from_seed(old.seed),
                                           not_before_iat=old.issued_at + 1)
        in_grace = await connect(server, old, tmp_path)  # the previous key is still listed
        await in_grace.nc.close()
    async with tenant_accounts(server, chain, tmp_path) as later:  # a new operator process
        later.grace_s = 0
        assert await later.ensure("gus", access.md_symbols, tenant_limits(access), rotation="first")
        assert not await later.ensure("gus", access.md_symbols, tenant_limits(access), rotation="first")
    server.restart()
    with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
        await connect(server, old, tmp_path)
    current = await connect(server, renewed, tmp_path)
    await current.nc.close()


async def _live_connection(server: EmbeddedNats, user: na.IssuedUser,
                           tmp_path: Path) -> tuple[Conn, dict[str, asyncio.Event], list[str]]:
    """As the agent connects (reconnect on), but with a bounded number of attempts."""
    events = {name: asyncio.Event() for name in ("disconnected", "reconnected", "closed")}
    reasons: list[str] = []
    live: Conn

    def recorder(name: str) -> Any:
        async def record() -> None:
            reasons.append(f"{name}: {live.nc.last_error}")
            events[name].set()
        return record

    live = await connect(server, user, tmp_path, inbox=pm.inbox_prefix(user.name), allow_reconnect=True,
                         max_reconnect_attempts=3, reconnect_time_wait=0.1,
                         **{f"{name}_cb": recorder(name) for name in events})
    return live, events, reasons


async def test_the_operator_gives_an_older_platform_account_the_fleets_exports(own_server, tmp_path):
    """A platform account served without exports (a trust chain from before tenant
    accounts) gets them when the operator starts; a second start pushes nothing."""
    server, chain = own_server
    bare = dataclasses.replace(chain.authority().claims, exports=())
    system = await connect(server, chain.system_user, tmp_path)
    secrets = DirectorySecretStore(tmp_path / "secrets")
    try:
        old = nj.encode_account(bare, chain.operator_signing,
                                issued_at=nj.decode_account(chain.app_account_jwt).issued_at + 1)
        await na.push_account_jwt(system.nc, old, trusted_signers=chain.trusted_signers)
        await runtime._ensure_platform_account(chain, secrets, system.nc)
        served = await na.fetch_account_jwt(system.nc, chain.app_account.public_key)
        assert nj.decode_account(served).claims.exports == tenancy.platform_exports()
        await runtime._ensure_platform_account(chain, secrets, system.nc)
        assert await na.fetch_account_jwt(system.nc, chain.app_account.public_key) == served
    finally:
        await system.nc.close()


async def test_claims_updates_that_cannot_work_raise(own_server, tmp_path):
    server, chain = own_server
    authority = chain.authority()
    service = await connect(server, chain.service_user, tmp_path)
    system = await connect(server, chain.system_user, tmp_path)
    try:
        with pytest.raises(na.ClaimsUpdateError, match="system-account user"):
            await na.push_account_jwt(service.nc, authority.account_jwt(), timeout_s=2)
        # Strict signing keys: the operator's identity key may not sign accounts.
        by_identity_key = nj.encode_account(authority.claims, chain.operator)
        with pytest.raises(na.ClaimsUpdateError, match="not a trusted operator key"):
            await na.push_account_jwt(system.nc, by_identity_key, trusted_signers=chain.trusted_signers)
        with pytest.raises(na.ClaimsUpdateError, match="issuer to be a signing key"):
            await na.push_account_jwt(system.nc, by_identity_key)
        assert await na.fetch_account_jwt(system.nc, authority.account_public_key) != by_identity_key
    finally:
        await service.nc.close()
        await system.nc.close()
