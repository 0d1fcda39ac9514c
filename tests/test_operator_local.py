"""The operator in local mode against a real nats-server in JWT operator mode: TradingClient
files become a config entry, credentials and a bootstrap Secret; a tier change reaches a
running agent live; drift is repaired; a deleted file removes the user."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import nats
import pytest
import yaml
from agent_harness import AgentHarness
from nats.aio.client import RawCredentials
from nats.js.errors import KeyNotFoundError
from waiting import wait_for

from mt5fleet.operator.adapters.appliers import AGENT_KEY_KEY, CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import create_trust_chain
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import tenant_secret_name
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import STATUS_SUFFIX, LocalOperator
from mt5fleet.operator.core.models import ROTATE_SIGNING_KEY_ANNOTATION
from mt5fleet.operator.core.nats_jwt import decode_user, parse_creds
from mt5fleet.proto import subjects
from mt5fleet.proto.domain.clock import AcceleratedClock
from mt5fleet.proto.runtime import bootstrap
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.v1 import config_pb2

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
async def platform(tmp_path):
    """An operator-mode server, the service connection, and a local operator over a folder
    holding bob (pro) and carol (pro, over the limit) and the demo Secrets."""
    chain = create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-local", store_dir=tmp_path / "store",
                      operator=chain.server_mode()) as server:
        service = await nats.connect(server.url, user_credentials=RawCredentials(chain.service_user.creds_text))
        await bootstrap.bootstrap(service.jetstream(), subjects.build_layout())
        trust = tmp_path / "trust.json"
        trust.write_text(chain.to_json())
        creds = tmp_path / "service.creds"
        creds.write_text(chain.service_user.creds_text)
        folder = tmp_path / "clients"
        folder.mkdir()
        for name in ("bob-pro.yaml", "carol-pro-over-limit.yaml", "secrets.yaml"):
            shutil.copy(EXAMPLES / name, folder / name)
        options = runtime.OperatorOptions(nats=NatsSettings(servers=(server.url,), creds_file=str(creds)),
                                          trust_file=trust)
        secrets = DirectorySecretStore(tmp_path / "state" / "secrets")
        running = await runtime.start(options, secrets)
        local = LocalOperator(folder, running.reconciler, secrets, poll_s=0.05)
        try:
            yield server, service, local, secrets, folder
        finally:
            await running.close()
            assert not running.creds_dir.exists()  # the system user's seed does not outlive the run
            await service.close()


async def config_of(service, user_id: str) -> config_pb2.ClientConfig:
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    return config_pb2.ClientConfig.FromString((await kv.get(user_id)).value)


def status_of(folder: Path, file: str) -> dict:
    [entry] = yaml.safe_load((folder / (file + STATUS_SUFFIX)).read_text())
    return entry["status"]


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_files_become_config_credentials_and_status(platform):
    _, service, local, secrets, folder = platform
    assert await local.scan() == 2
    bob = await config_of(service, "bob")
    assert bob.tier_name == "pro" and list(bob.trading_symbols) == ["EURUSD", "EURGBP", "EURJPY", "USDCHF"]
    assert bob.worker_shard == subjects.partition_of("bob") and bob.mt5_credentials.login == 3012345
    assert bob.mt5_credentials.ciphertext and b"eu-live-4" not in bob.SerializeToString()  # sealed, not plain
    carol = await config_of(service, "carol")
    assert len(carol.trading_symbols) == 5
    secret = await secrets.get(bootstrap_secret_name("bob"))
    jwt, _ = parse_creds(secret[CREDS_KEY].decode())
    assert decode_user(jwt).claims.name == "bob" and AGENT_KEY_KEY in secret
    bob_status = status_of(folder, "bob-pro.yaml")
    assert bob_status["phase"] == "Ready" and bob_status["workerShard"] == subjects.partition_of("bob")
    assert conditions(bob_status)["NatsProvisioned"] == ("True", "Provisioned")
    assert conditions(bob_status)["CredentialsIssued"] == ("True", "Issued")
    assert conditions(bob_status)["AgentConnected"] == ("Unknown", "NeverSeen")
    carol_status = status_of(folder, "carol-pro-over-limit.yaml")
    assert conditions(carol_status)["TierCompliant"] == ("False", "TradingPairsOverLimit")
    assert carol_status["phase"] == "Degraded"
    assert await local.scan() == 0  # nothing changed: nothing reconciled
    assert await local.scan(force=True) == 2
    assert (await config_of(service, "bob")).updated_at == bob.updated_at  # idempotent: not rewritten


async def test_a_tier_change_reaches_the_running_agent_live(platform, tmp_path):
    server, service, local, secrets, folder = platform
    await local.scan()
    creds_file = secrets.path(bootstrap_secret_name("bob"), CREDS_KEY)
    # On the wall clock: the operator judges heartbeats by it (no trading happens here).
    # Bob's TradingClient declares EuroRetail-Live: his terminal must be on it (issue 17).
    harness = AgentHarness(server, tmp_path, user_id="bob", nats={"creds_file": str(creds_file)},
                           simulated={"broker": "eu-netting", "seed": 7},
                           symbols={"trading": ["EURUSD"], "monitoring": []}, clock=AcceleratedClock(time.time(), 1.0))
    harness.nc = service
    harness.js = service.jetstream()
    try:
        await harness.start_agent()
        await wait_for(lambda: harness.agent.effective.tier == "pro", "the operator's config applied")
        connection, creds = harness.agent.nc, creds_file.read_bytes()
        assert harness.agent.effective.trading_symbols == ("EURUSD", "EURGBP", "EURJPY", "USDCHF")
        body = yaml.safe_load((folder / "bob-pro.yaml").read_text())
        body["spec"]["tier"] = "free"
        (folder / "bob-pro.yaml").write_text(yaml.safe_dump(body))
        assert await local.scan() == 1
        await wait_for(lambda: harness.agent.effective.tier == "free", "the tier change applied live")
        assert harness.agent.effective.trading_symbols == ("EURUSD", "EURGBP")
        status = status_of(folder, "bob-pro.yaml")
        assert status["observedGeneration"] == 2
        assert conditions(status)["TierCompliant"] == ("False", "TradingPairsOverLimit")
        # Fewer md symbols re-sign bob's account, not his user: the agent stays connected on
        # the same connection and the same credentials file.
        _set_monitoring(folder / "bob-pro.yaml", ["GBPUSD", "NZDUSD"])
        assert await local.scan() == 1
        await wait_for(lambda: "NZDUSD" in harness.agent.effective.md_symbols, "the monitoring change applied live")
        assert harness.agent.reconnects == 0 and harness.agent.nc is connection and connection.is_connected
        assert creds_file.read_bytes() == creds
        async def observed_connected() -> bool:  # the timer's pass: heartbeats into AgentConnected
            await local.observe()
            return conditions(status_of(folder, "bob-pro.yaml"))["AgentConnected"][0] == "True"
        await wait_for(observed_connected, "AgentConnected from bob's heartbeats", timeout=10, interval=0.1)
        assert conditions(status_of(folder, "bob-pro.yaml"))["AgentConnected"] == ("True", "Heartbeating")
    finally:
        if harness.agent is not None:
            await harness.agent.stop()


async def test_drift_is_repaired_and_a_deleted_file_removes_the_user(platform):
    _, service, local, secrets, folder = platform
    await local.scan()
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    await kv.delete("bob")  # behind the operator's back
    await service.jetstream().delete_stream(subjects.SYMBOLS_STREAM)
    await local.scan(force=True)  # the resync timer's pass
    assert (await config_of(service, "bob")).user_id == "bob"
    assert (await service.jetstream().stream_info(subjects.SYMBOLS_STREAM)).config.name == subjects.SYMBOLS_STREAM
    await service.jetstream().publish("tc.bob.commands", b"x")
    (folder / "bob-pro.yaml").unlink()
    await local.scan()
    with pytest.raises(KeyNotFoundError):
        await kv.get("bob")
    assert await secrets.get(bootstrap_secret_name("bob")) is None
    purged = await service.jetstream().stream_info(subjects.COMMANDS_STREAM, subjects_filter="tc.bob.commands")
    assert not purged.state.subjects
    assert not (folder / ("bob-pro.yaml" + STATUS_SUFFIX)).exists()
    assert (await config_of(service, "carol")).user_id == "carol"  # the others are untouched


async def test_a_malformed_file_is_refused_with_its_reasons_and_costs_nothing_else(platform):
    _, service, local, _, folder = platform
    (folder / "broken.yaml").write_text(yaml.safe_dump({
        "apiVersion": "mt5fleet.io/v1alpha1", "kind": "TradingClient", "metadata": {"name": "eve"},
        "spec": {"userId": "Eve!", "tier": "pro", "broker": {"name": "X", "server": "Y"},
                 "account": {"login": 1, "passwordSecretRef": {"name": "mt5-eve"}},
                 "symbols": {"trading": ["EURUSD"], "monitoring": ["EURUSD"]}}}))
    (folder / "twice.yaml").write_text((folder / "bob-pro.yaml").read_text().replace("name: bob", "name: bob2"))
    (folder / "garbage.yaml").write_text("kind: [unclosed")
    await local.scan()
    [eve] = yaml.safe_load((folder / ("broken.yaml" + STATUS_SUFFIX)).read_text())
    assert eve["status"]["phase"] == "Invalid"
    ready = next(c for c in eve["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.userId" in ready["message"]
    [twice] = yaml.safe_load((folder / ("twice.yaml" + STATUS_SUFFIX)).read_text())
    assert "already used by default/bob" in twice["status"]["conditions"][0]["message"]
    assert (await config_of(service, "bob")).user_id == "bob"
    assert (await config_of(service, "carol")).user_id == "carol"
    assert local.reconciler.metrics.reconciles.labels("invalid")._value.get() == 2


async def test_tier_changes_re_sign_only_the_tenants_account_and_keep_its_connection(platform):
    """Up to enterprise and down to free: the user's JWT never changes and its connection
    stays; the account's md imports follow at once (a downgrade bites without a reconnect);
    carol's account is never re-signed."""
    server, service, local, secrets, folder = platform
    await local.scan()
    creds = (await secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    carols = await secrets.get(tenant_secret_name("carol"))
    agent = await nats.connect(server.url, user_credentials=RawCredentials(creds.decode()), allow_reconnect=False)
    try:
        md = await agent.subscribe("md.*")
        await agent.flush()
        for tier, arrives in (("enterprise", b"EURJPY"), ("free", b"EURUSD")):
            _set_tier(folder / "bob-pro.yaml", tier)
            assert await local.scan() == 1
            await service.publish("md.EURJPY", b"EURJPY")  # bob's on pro and enterprise, not on free
            await service.publish("md.EURUSD", b"EURUSD")
            assert (await md.next_msg(timeout=5)).data == arrives
            if tier == "enterprise":
                assert (await md.next_msg(timeout=5)).data == b"EURUSD"
        assert agent.is_connected
    finally:
        await agent.close()
    assert (await secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY] == creds
    assert await secrets.get(tenant_secret_name("carol")) == carols


async def test_a_rotation_annotation_re_signs_the_agents_key_and_keeps_it_connected(platform):
    """``mt5fleet.io/rotate-signing-key`` on bob: his account gets a new signing key, his
    Secret new .creds for the same key signed by it, his running connection stays (the
    previous key is in its grace); the same annotation again changes nothing."""
    server, service, local, secrets, folder = platform
    await local.scan()
    before = (await secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
    agent = await nats.connect(server.url, user_credentials=RawCredentials(before.decode()), allow_reconnect=False)
    try:
        _annotate(folder / "bob-pro.yaml", {ROTATE_SIGNING_KEY_ANNOTATION: "2026-12-07"})
        assert await local.scan() == 1
        after = (await secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY]
        old, new = (decode_user(parse_creds(creds.decode())[0]) for creds in (before, after))
        assert new.claims.subject == old.claims.subject and new.issuer != old.issuer
        await agent.flush(timeout=2)
        assert agent.is_connected
        assert await local.scan() == 0
        assert (await secrets.get(bootstrap_secret_name("bob")))[CREDS_KEY] == after
    finally:
        await agent.close()
    renewed = await nats.connect(server.url, user_credentials=RawCredentials(after.decode()), allow_reconnect=False)
    await renewed.close()


def _annotate(path: Path, annotations: dict[str, str]) -> None:
    [document] = yaml.safe_load_all(path.read_text())
    document["metadata"].setdefault("annotations", {}).update(annotations)
    path.write_text(yaml.safe_dump(document))


class RecordingScaler:
    """The adjust Deployment's scale as the operator sees it (DeploymentScaler's protocol)."""

    def __init__(self) -> None:
        self.current: int | None = 1
        self.calls: list[int] = []

    async def replicas(self) -> int | None:
        return self.current

    async def scale(self, replicas: int) -> None:
        self.current = replicas
        self.calls.append(replicas)


async def test_a_restarted_operator_sizes_the_pool_from_the_cluster_not_from_memory(platform, tmp_path):
    """Two users served; a fresh operator process (one user per replica) sizes the pool to
    two before it has reconciled anything, and its passes keep it there."""
    server, service, local, secrets, folder = platform
    await local.scan()
    served = len(await (await service.jetstream().key_value(subjects.CONFIG_BUCKET)).keys())
    assert served == 2  # bob and carol
    nats_settings = NatsSettings(servers=(server.url,), creds_file=str(tmp_path / "service.creds"))
    options = runtime.OperatorOptions(nats=nats_settings, trust_file=tmp_path / "trust.json", users_per_worker=1)
    scaler = RecordingScaler()
    restarted = await runtime.start(options, secrets, scaler=scaler)
    try:
        await restarted.reconciler.resize_pool()
        assert scaler.calls == [served]
        await LocalOperator(folder, restarted.reconciler, secrets, poll_s=0.05).scan()
        assert scaler.current == served and scaler.calls == [served]
    finally:
        await restarted.close()


async def test_the_operator_never_undoes_bootstrap_limits(platform):
    _, service, local, _, _ = platform
    js = service.jetstream()
    info = await js.stream_info(subjects.PRICES_STREAM)
    info.config.max_age = 120.0  # as `mt5fleet nats bootstrap --config` would set it
    await js.update_stream(info.config)
    await local.scan(force=True)
    assert (await js.stream_info(subjects.PRICES_STREAM)).config.max_age == 120.0


def _set_monitoring(file: Path, symbols: list[str]) -> None:
    body = yaml.safe_load(file.read_text())
    body["spec"]["symbols"]["monitoring"] = symbols
    file.write_text(yaml.safe_dump(body))


def _set_tier(file: Path, tier: str) -> None:
    body = yaml.safe_load(file.read_text())
    body["spec"]["tier"] = tier
    file.write_text(yaml.safe_dump(body))


async def test_an_unreadable_config_entry_is_rewritten(platform):
    _, service, local, _, _ = platform
    await local.scan()
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    await kv.put("bob", b"\x0a\xff\xff not a ClientConfig")
    await local.scan(force=True)
    repaired = await config_of(service, "bob")
    assert repaired.user_id == "bob" and repaired.mt5_credentials.ciphertext
    assert status_of(local.folder, "bob-pro.yaml")["phase"] == "Ready"


async def test_a_config_entry_its_readers_would_refuse_is_rewritten(platform):
    """The entry is read back as the agent and the workers read it (checked, under its key):
    bob's own config with a negative updated_at differs from the desired one only where the
    comparison does not look, and is still drift."""
    _, service, local, _, _ = platform
    await local.scan()
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    stamped = await config_of(service, "bob")
    stamped.updated_at = -1
    await kv.put("bob", stamped.SerializeToString())
    await local.scan(force=True)
    repaired = await config_of(service, "bob")
    assert repaired.user_id == "bob" and repaired.updated_at > 0
    assert repaired.mt5_credentials.ciphertext and repaired.generation == stamped.generation


async def test_a_tier_too_small_for_the_users_symbols_is_invalid_not_a_crash(platform):
    _, _, local, _, folder = platform
    pro = local.reconciler.tiers["pro"]
    local.reconciler.tiers["pro"] = dataclasses.replace(pro, max_subscriptions=5)
    await local.scan()
    status = status_of(folder, "bob-pro.yaml")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Invalid" and "the tier allows 5 subscriptions" in ready["message"]
