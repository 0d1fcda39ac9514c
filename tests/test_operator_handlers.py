"""The kopf handlers as kopf calls them: real TradingClient bodies (the examples, with the
metadata and CRD defaults the API server adds), a real ``kopf.Patch`` and ``kopf.Memo``,
and the operator's Reconciler against a real nats-server in JWT mode. What a cluster user
relies on: the status and events a create, update, resume, timer and delete produce, and
what exists in NATS and the secret store afterwards. Also the kopf settings and
registrations, and the operator's /metrics."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
import nats
import pytest
from nats.aio.client import RawCredentials
from nats.js.errors import KeyNotFoundError
from operator_harness import example_documents, jwt_nats, merge_patch, stored_body
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from mt5fleet.operator.adapters.appliers import CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import tenant_secret_name
from mt5fleet.operator.app import handlers, runtime
from mt5fleet.operator.core import models
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import config_pb2

CONDITION_KEYS = {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}


@dataclass
class Cluster:
    """The handlers' world: stored bodies, the memo kopf hands them, the events they post."""
    memo: kopf.Memo
    service: Any                       # the operator's own NATS connection (full access)
    secrets: DirectorySecretStore
    url: str
    events: list[tuple[str, str, str, str]] = field(default_factory=list)   # (name, type, reason, message)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, body: Any, kind: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], kind, reason, message))

    async def call(self, handler: Callable[..., Any], raw: dict[str, Any]) -> kopf.Patch:
        """Call a handler with kopf's arguments; its status patch is merged into the stored body."""
        self.objects[raw["metadata"]["name"]] = raw
        body = kopf.Body(raw)
        patch = kopf.Patch()
        await handler(body=body, spec=body.spec, meta=body.metadata, status=body.status, patch=patch,
                      memo=self.memo, logger=logging.getLogger("test.kopf"), retry=0)
        self.objects[raw["metadata"]["name"]] = merge_patch(raw, dict(patch))
        return patch

    def take_events(self) -> list[tuple[str, str, str, str]]:
        taken, self.events[:] = list(self.events), []
        return taken

    async def config(self, user_id: str) -> tuple[config_pb2.ClientConfig, int]:
        """The user's config entry and its revision (a rewrite shows as a new revision)."""
        kv = await self.service.jetstream().key_value(subjects.CONFIG_BUCKET)
        entry = await kv.get(user_id)
        return config_pb2.ClientConfig.FromString(entry.value), entry.revision


@pytest.fixture
async def cluster(tmp_path):
    """runtime.start with the examples' Secrets provided, and a memo carrying the
    Reconciler and a recording ``emit``."""
    async with jwt_nats(tmp_path) as (server, service, options):
        secrets = DirectorySecretStore(tmp_path / "secrets")
        for doc in example_documents():
            if doc["kind"] == "Secret":
                secrets.provide(doc["metadata"]["name"], {k: v.encode() for k, v in doc["stringData"].items()})
        running = await runtime.start(options, secrets)
        memo = kopf.Memo()
        memo.reconciler, memo.running = running.reconciler, running
        world = Cluster(memo=memo, service=service, secrets=secrets, url=server.url)
        memo.emit = world.record
        try:
            yield world
        finally:
            await running.close()


def conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


async def refused(url: str, creds: bytes) -> bool:
    """Whether the server refuses a connection made with these credentials."""
    try:
        connection = await nats.connect(url, user_credentials=RawCredentials(creds.decode()), allow_reconnect=False,
                                        connect_timeout=5, max_reconnect_attempts=0)
    except Exception:  # authorization violation: the connection is refused
        return True
    await connection.close()
    return False


@contextlib.asynccontextmanager
async def connected(url: str, creds: bytes) -> AsyncIterator[tuple[Any, Any]]:
    """An agent's connection on these credentials, subscribed to every md symbol it may read."""
    agent = await nats.connect(url, user_credentials=RawCredentials(creds.decode()), allow_reconnect=False)
    try:
        md = await agent.subscribe("md.*")
        await agent.flush()
        yield agent, md
    finally:
        await agent.close()


# ---------------------------------------------------------------------- create / update / resume
async def test_create_writes_the_full_status_and_says_what_it_created(cluster):
    patch = await cluster.call(handlers.on_change, stored_body("bob"))
    status = patch["status"]
    assert status["phase"] == "Ready" and status["observedGeneration"] == 1
    found = conditions(status)
    assert set(found) == {"Ready", "NatsProvisioned", "CredentialsIssued", "AgentConnected", "TierCompliant"}
    for condition in found.values():
        assert set(condition) >= CONDITION_KEYS and condition["message"] and condition["observedGeneration"] == 1
        assert condition["lastTransitionTime"].endswith("Z")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Reconciled")
    assert (found["CredentialsIssued"]["status"], found["CredentialsIssued"]["reason"]) == ("True", "Issued")
    assert (found["AgentConnected"]["status"], found["AgentConnected"]["reason"]) == ("Unknown", "NeverSeen")
    assert found["TierCompliant"]["reason"] == "WithinLimits"
    assert status["credentialsSecret"] == bootstrap_secret_name("bob")
    assert status["workerShard"] == subjects.partition_of("bob")
    assert cluster.take_events() == [
        ("bob", "Normal", "Created", "secret mt5fleet-agent-bob created"),
        ("bob", "Normal", "Created", "config created (generation 1)"),
        ("bob", "Normal", "Created", "credentials created"),
    ]
    config, _ = await cluster.config("bob")
    assert config.tier_name == "pro" and config.generation == 1 and config.mt5_credentials.ciphertext
    assert CREDS_KEY in await cluster.secrets.get(bootstrap_secret_name("bob"))


async def test_an_over_limit_spec_is_degraded_and_says_what_was_left_out(cluster):
    patch = await cluster.call(handlers.on_change, stored_body("carol"))
    tier = conditions(patch["status"])["TierCompliant"]
    assert patch["status"]["phase"] == "Degraded"
    assert (tier["status"], tier["reason"]) == ("False", "TradingPairsOverLimit")
    assert "NZDUSD left out" in tier["message"]
    assert len((await cluster.config("carol"))[0].trading_symbols) == 5


async def test_a_tier_change_rewrites_the_config_and_re_signs_only_the_tenants_account(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    await cluster.call(handlers.on_change, stored_body("alice"))
    _, before = await cluster.config("bob")
    creds = (await cluster.secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    alices_account = await cluster.secrets.get(tenant_secret_name("alice"))
    cluster.take_events()
    async with connected(cluster.url, creds) as (agent, md):
        update = merge_patch(cluster.objects["bob"], {"spec": {"tier": "free"}, "metadata": {"generation": 2}})
        patch = await cluster.call(handlers.on_change, update)
        after, revision = await cluster.config("bob")
        assert after.tier_name == "free" and after.generation == 2 and revision > before
        assert list(after.trading_symbols) == ["EURUSD", "EURGBP"]
        assert patch["status"]["observedGeneration"] == 2
        assert conditions(patch["status"])["TierCompliant"]["reason"] == "TradingPairsOverLimit"
        assert cluster.take_events() == [
            ("bob", "Normal", "Updated", "config updated (generation 2)"),
            ("bob", "Normal", "Updated", "credentials updated (account re-signed)"),
        ]
        # Fewer md symbols: the account no longer imports EURJPY, at once, while the agent's
        # connection and its JWT stay as they were; no other tenant's account was touched.
        await cluster.service.publish("md.EURJPY", b"dropped")
        await cluster.service.publish("md.EURUSD", b"kept")
        assert [(await md.next_msg(timeout=5)).data] == [b"kept"]
        assert agent.is_connected
    assert (await cluster.secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY] == creds
    assert await cluster.secrets.get(tenant_secret_name("alice")) == alices_account


async def test_a_resume_with_nothing_changed_writes_and_says_nothing(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    _, before = await cluster.config("bob")
    cluster.take_events()
    patch = await cluster.call(handlers.on_change, cluster.objects["bob"])  # the operator restarted
    assert not patch and cluster.take_events() == []
    assert (await cluster.config("bob"))[1] == before


# ---------------------------------------------------------------------- timer: drift repair
async def test_the_timer_repairs_what_was_deleted_behind_the_operators_back(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    cluster.take_events()
    js = cluster.service.jetstream()
    await (await js.key_value(subjects.CONFIG_BUCKET)).delete("bob")
    await js.delete_stream(subjects.SYMBOLS_STREAM)
    await cluster.call(handlers.on_timer, cluster.objects["bob"])
    assert (await cluster.config("bob"))[0].user_id == "bob"
    assert (await js.stream_info(subjects.SYMBOLS_STREAM)).config.name == subjects.SYMBOLS_STREAM
    assert cluster.take_events() == [
        ("bob", "Normal", "RepairedCreated", f"streams created ({subjects.SYMBOLS_STREAM})"),
        ("bob", "Normal", "RepairedCreated", "config created (generation 1)"),
    ]
    quiet = await cluster.call(handlers.on_timer, cluster.objects["bob"])
    assert not quiet and cluster.take_events() == []  # nothing drifted: nothing written or said


# ---------------------------------------------------------------------- delete (finalizer)
async def test_pause_cuts_the_agent_off_within_seconds_and_resume_issues_anew(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    creds = (await cluster.secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    async with connected(cluster.url, creds) as (agent, _):
        paused = merge_patch(cluster.objects["bob"], {"spec": {"paused": True}, "metadata": {"generation": 2}})
        await cluster.call(handlers.on_change, paused)
        await wait_for(lambda: agent.is_closed, "the server closed the paused agent's connection", timeout=5)
    assert await refused(cluster.url, creds)
    resumed = merge_patch(cluster.objects["bob"], {"spec": {"paused": False}, "metadata": {"generation": 3}})
    await cluster.call(handlers.on_change, resumed)
    fresh = (await cluster.secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    assert fresh != creds and not await refused(cluster.url, fresh)


async def test_delete_removes_config_secret_and_closes_the_account_twice_safely(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    creds = (await cluster.secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    await cluster.service.jetstream().publish("tc.bob.commands", b"a command for bob")
    cluster.take_events()
    async with connected(cluster.url, creds) as (agent, _):
        await cluster.call(handlers.on_delete, cluster.objects["bob"])
        await wait_for(lambda: agent.is_closed, "the server closed the deleted agent's connection", timeout=5)
    kv = await cluster.service.jetstream().key_value(subjects.CONFIG_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await kv.get("bob")
    assert await cluster.secrets.get(bootstrap_secret_name("bob")) is None
    assert await cluster.secrets.get(tenant_secret_name("bob")) is None
    assert await refused(cluster.url, creds)
    assert cluster.take_events() == [
        ("bob", "Normal", "Deleted", "config deleted"),
        ("bob", "Normal", "Deleted", "credentials deleted (account closed)"),
        ("bob", "Normal", "Deleted", "streams deleted (purged 1 stream(s))"),
        ("bob", "Normal", "Deleted", "secret mt5fleet-agent-bob deleted"),
    ]
    # kopf retries a delete whose handler it did not see finish: everything already gone is done.
    await cluster.call(handlers.on_delete, cluster.objects["bob"])
    assert cluster.take_events() == []


# ---------------------------------------------------------------------- refused bodies
async def test_an_unknown_tier_is_invalid_with_a_warning_and_provisions_nothing(cluster):
    patch = await cluster.call(handlers.on_change, stored_body("alice", tier="platinum"))
    assert patch["status"]["phase"] == "Invalid"
    ready = conditions(patch["status"])["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "unknown tier 'platinum' (known: enterprise, free, pro)" in ready["message"]
    assert cluster.take_events() == [("alice", "Warning", "InvalidSpec", ready["message"])]
    with pytest.raises(KeyNotFoundError):
        await (await cluster.service.jetstream().key_value(subjects.CONFIG_BUCKET)).get("alice")
    assert await cluster.secrets.get(bootstrap_secret_name("alice")) is None


async def test_a_body_the_schema_refuses_is_invalid_with_its_reasons(cluster):
    patch = await cluster.call(handlers.on_change, stored_body("alice", userId="Alice!"))
    ready = conditions(patch["status"])["Ready"]
    assert patch["status"]["phase"] == "Invalid" and "spec.userId" in ready["message"]
    [(_, kind, reason, _)] = cluster.take_events()
    assert (kind, reason) == ("Warning", "InvalidSpec")
    await cluster.call(handlers.on_timer, cluster.objects["alice"])  # the timer leaves it to on_change
    assert cluster.take_events() == []


# ---------------------------------------------------------------------- metrics
async def scrape(running: runtime.Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    runner = await runtime.serve_http(running.metrics, running.nc, "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    finally:
        await runner.cleanup()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_metrics_count_reconciles_by_result_and_clients_by_tier_and_phase(cluster):
    await cluster.call(handlers.on_change, stored_body("bob"))
    await cluster.call(handlers.on_change, stored_body("carol"))
    await cluster.call(handlers.on_change, stored_body("alice", tier="platinum"))
    samples = await scrape(cluster.memo.running)
    assert samples[("mt5fleet_operator_reconciles_total", (("result", "ok"),))] == 2
    assert samples[("mt5fleet_operator_reconciles_total", (("result", "invalid"),))] == 1
    assert samples[("mt5fleet_operator_reconcile_seconds_count", ())] == 2
    assert samples[("mt5fleet_operator_reconcile_seconds_sum", ())] > 0
    clients = {labels: value for (name, labels), value in samples.items() if name == "mt5fleet_operator_clients"}
    assert clients == {(("phase", "Ready"), ("tier", "pro")): 1, (("phase", "Degraded"), ("tier", "pro")): 1,
                       (("phase", "Invalid"), ("tier", "unknown")): 1}
    await cluster.call(handlers.on_delete, cluster.objects["bob"])
    samples = await scrape(cluster.memo.running)
    assert samples[("mt5fleet_operator_reconciles_total", (("result", "deleted"),))] == 1
    assert samples[("mt5fleet_operator_clients", (("phase", "Ready"), ("tier", "pro")))] == 0


# ---------------------------------------------------------------------- kopf settings and registrations
def test_configure_sets_our_finalizer_annotation_prefix_and_no_peering():
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.persistence.finalizer == "mt5fleet.io/finalizer"
    progress, diffbase = settings.persistence.progress_storage, settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "mt5fleet.io"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage) and diffbase.prefix == "mt5fleet.io"
    assert settings.peering.standalone  # the Lease elects the one replica that runs kopf (app/elected.py)


def test_register_handles_every_cause_of_tradingclients():
    registry = kopf.OperatorRegistry()
    handlers.register(registry, interval_s=30)
    resource = kopf.Resource(models.GROUP, models.VERSION, models.PLURAL)
    changing = registry._changing.get_all_handlers()
    assert all(h.selector.check(resource) for h in changing)
    by_cause = {("resume" if h.initial else h.reason.value): h for h in changing}
    assert set(by_cause) == {"create", "update", "resume", "delete"}
    assert {by_cause[c].fn for c in ("create", "update", "resume")} == {handlers.on_change}
    assert by_cause["update"].field == ("spec",)  # a status or metadata change is not a reconcile
    assert by_cause["delete"].fn is handlers.on_delete and by_cause["delete"].requires_finalizer
    [timer] = registry._spawning.get_all_handlers()
    assert timer.fn is handlers.on_timer and timer.selector.check(resource)
    assert (timer.interval, timer.initial_delay) == (30, 15)
