"""A TradingClient's life on the real API server (kube_harness), the operator a separate
process on its ServiceAccount token (as in test_operator_e2e.py), one process for the
module, resyncing every ``RESYNC_S`` and sizing one adjustment worker per user so that the
pool visibly follows a small fleet:

* at rest, reconciles read no Secret from the API server (watch-fed cache) and write nothing;
* credentials issued into the bootstrap Secret, and rotated by the annotation;
* a tier change re-signs the tenant's NATS account with the new tier's limits;
* pause revokes the credentials, resume issues new ones;
* drift repair: a deleted bootstrap Secret and a deleted TC_* stream come back;
* the adjust Deployment's replicas follow the fleet up and down;
* a restarted operator changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError
from operator_process import (
    CRDS,
    EXAMPLES,
    WORKERS,
    WRITES,
    NatsForOperator,
    OperatorProcess,
    get,
    nats_for_operator,
    operator_kubeconfig,
    phase,
    prepare_namespace,
    token_uid,
    until,
    what,
)

from mt5fleet.operator.adapters.appliers import CREDS_KEY, PUBLIC_KEY_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import fetch_account_jwt, write_creds
from mt5fleet.operator.adapters.tenant_accounts import STATE_KEY, tenant_secret_name
from mt5fleet.operator.core.models import ROTATE_SIGNING_KEY_ANNOTATION
from mt5fleet.operator.core.nats_creds import parse_creds
from mt5fleet.operator.core.nats_jwt import decode_account, decode_user
from mt5fleet.operator.core.nats_keys import NKey
from mt5fleet.proto import subjects

pytestmark = pytest.mark.timeout(900)   # a cold cache builds the API server first

RESYNC_S = 2.0
WAIT_S = 30.0
RECONCILED = 'mt5fleet_operator_reconciles_total{result="ok"}'


@dataclass
class Fleet:
    cluster: object
    namespace: str
    nats: NatsForOperator
    folder: Path
    operator: OperatorProcess
    uid: str

    def start_operator(self, name: str) -> None:
        kubeconfig = operator_kubeconfig(self.cluster, self.namespace, self.folder, name)
        self.operator = OperatorProcess(name, self.nats, self.namespace, kubeconfig, self.folder,
                                        "--resync", str(RESYNC_S), "--users-per-worker", "1")
        self.uid = token_uid(self.cluster, kubeconfig)

    def secret(self, name: str) -> dict[str, bytes] | None:
        body = get(self.cluster, "secret", name, "-n", self.namespace)
        return None if body is None else {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}

    def client(self, name: str) -> dict:
        return get(self.cluster, "tradingclient", name, "-n", self.namespace) or {}

    def patch(self, name: str, patch: dict) -> int:
        body = self.cluster.kubectl_json("patch", "tradingclient", name, "-n", self.namespace, "--type=merge",
                                         "-p", json.dumps(patch))
        return body["metadata"]["generation"]

    def replicas(self) -> int:
        return (get(self.cluster, "deployment", WORKERS, "-n", self.namespace) or {})["spec"].get("replicas", 0)

    async def until(self, read, what_: str, timeout: float = WAIT_S):
        return await until(read, what_, timeout, processes=(self.operator,))

    async def reconciled(self, name: str, generation: int) -> None:
        await self.until(lambda: phase(self.cluster, self.namespace, name)[1] == generation,
                         f"{name} generation {generation} reconciled")

    async def resyncs(self, count: int) -> None:
        """Until the operator has reconciled ``count`` more times (its timers, at rest)."""
        start = self.operator.metric(RECONCILED) or 0
        await self.until(lambda: (self.operator.metric(RECONCILED) or 0) >= start + count,
                         f"{count} more reconciles")

    def audit_mark(self) -> int:
        return len(self.cluster.audit_log.read_text().splitlines())

    def audit_since(self, mark: int) -> list[dict]:
        lines = self.cluster.audit_log.read_text().splitlines()[mark:]
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if e["user"].get("uid") == self.uid and e.get("objectRef")]


@pytest.fixture(scope="module")
def fleet(kube_cluster, tmp_path_factory) -> Iterator[Fleet]:
    """alice (free) Ready under one operator; the tests leave her Ready and unpaused."""
    cluster = kube_cluster
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tradingclients.mt5fleet.io", "--timeout=30s")
    folder = tmp_path_factory.mktemp("e2e-life")
    namespace = f"life-{uuid.uuid4().hex[:8]}"
    prepare_namespace(cluster, namespace)
    with nats_for_operator(folder / "nats") as nats_server:
        fleet = Fleet(cluster, namespace, nats_server, folder, operator=None, uid="")  # type: ignore[arg-type]
        fleet.start_operator("life")
        try:
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "alice-free.yaml"))
            asyncio.run(fleet.until(lambda: phase(cluster, namespace, "alice") == ("Ready", 1), "alice Ready", 60))
            yield fleet
        finally:
            fleet.operator.stop()


async def system_nats(fleet: Fleet):
    creds = write_creds(fleet.folder / "system-test.creds", fleet.nats.chain.system_user)
    return await nats.connect(fleet.nats.url, user_credentials=str(creds))


async def account_limits(fleet: Fleet, user_id: str):
    state = json.loads(fleet.secret(tenant_secret_name(user_id))[STATE_KEY])
    nc = await system_nats(fleet)
    try:
        token = await fetch_account_jwt(nc, NKey.from_seed(state["account"]).public_key)
    finally:
        await nc.close()
    return decode_account(token).claims.limits


def creds_issuer(creds: bytes) -> str:
    return decode_user(parse_creds(creds.decode())[0]).issuer


# ---------------------------------------------------------------------- at rest
async def test_at_rest_reconciles_read_no_secret_and_write_nothing(fleet):
    """The timers reconcile every RESYNC_S: Secrets come from the watch-fed cache (no GET),
    and a resource already as wanted is not written (the Lease's renewals aside)."""
    await fleet.resyncs(2)   # settled: alice's first reconciles done
    mark = fleet.audit_mark()
    await fleet.resyncs(3)
    events = fleet.audit_since(mark)
    gets = [e for e in events if what(e) == ("", "secrets", "get")]
    assert gets == [], f"{len(gets)} Secret GETs in 3 reconciles at rest"
    writes = sorted({what(e) for e in events if e["verb"] in WRITES and what(e)[1] != "leases"})
    assert writes == [], f"writes at rest: {writes}"


# ---------------------------------------------------------------------- credentials
async def test_credentials_are_issued_and_rotated_by_the_annotation(fleet):
    name = bootstrap_secret_name("alice")
    before = fleet.secret(name)
    assert CREDS_KEY in before and PUBLIC_KEY_KEY in before
    signer = creds_issuer(before[CREDS_KEY])
    request = uuid.uuid4().hex[:8]
    fleet.cluster.kubectl("annotate", "-n", fleet.namespace, "tradingclient", "alice",
                          f"{ROTATE_SIGNING_KEY_ANNOTATION}={request}")
    # The annotation is no spec change: the next resync handles it.
    await fleet.until(lambda: creds_issuer((fleet.secret(name) or {}).get(CREDS_KEY, before[CREDS_KEY])) != signer,
                      "alice's credentials signed by a new signing key")
    state = json.loads(fleet.secret(tenant_secret_name("alice"))[STATE_KEY])
    assert state["rotation"] == request and state["previous_signing"]   # the old key kept for its grace
    assert phase(fleet.cluster, fleet.namespace, "alice")[0] == "Ready"


# ---------------------------------------------------------------------- tier change
async def test_a_tier_change_re_signs_the_tenant_account_with_the_tiers_limits(fleet):
    free = await account_limits(fleet, "alice")
    assert (free.subs, free.payload) == (50, 32 * 1024)
    generation = fleet.patch("alice", {"spec": {"tier": "pro"}})
    await fleet.reconciled("alice", generation)
    pro = await account_limits(fleet, "alice")
    assert (pro.subs, pro.payload, pro.data) == (100, 64 * 1024, 512 * 1024 * 1024)
    assert fleet.client("alice")["status"]["phase"] == "Ready"
    generation = fleet.patch("alice", {"spec": {"tier": "free"}})   # and back
    await fleet.reconciled("alice", generation)
    assert (await account_limits(fleet, "alice")).subs == 50


# ---------------------------------------------------------------------- pause
async def test_pause_revokes_the_credentials_and_resume_issues_new_ones(fleet):
    name = bootstrap_secret_name("alice")
    issued = fleet.secret(name)
    generation = fleet.patch("alice", {"spec": {"paused": True}})
    await fleet.reconciled("alice", generation)
    status = fleet.client("alice")["status"]
    assert status["phase"] == "Paused"
    credentials = {c["type"]: c for c in status["conditions"]}["CredentialsIssued"]
    assert (credentials["status"], credentials["reason"]) == ("False", "Paused")
    paused = fleet.secret(name)
    assert CREDS_KEY not in paused and PUBLIC_KEY_KEY not in paused   # the agent's bootstrap stays
    state = json.loads(fleet.secret(tenant_secret_name("alice"))[STATE_KEY])
    assert issued[PUBLIC_KEY_KEY].decode() in state["revocations"]

    generation = fleet.patch("alice", {"spec": {"paused": False}})
    await fleet.reconciled("alice", generation)
    assert fleet.client("alice")["status"]["phase"] == "Ready"
    resumed = fleet.secret(name)
    assert CREDS_KEY in resumed and resumed[CREDS_KEY] != issued[CREDS_KEY]


# ---------------------------------------------------------------------- drift repair
async def test_a_deleted_bootstrap_secret_comes_back(fleet):
    name = bootstrap_secret_name("alice")
    fleet.cluster.kubectl("delete", "secret", name, "-n", fleet.namespace)
    await fleet.until(lambda: CREDS_KEY in (fleet.secret(name) or {}), "the bootstrap Secret back, with credentials")
    await fleet.until(lambda: phase(fleet.cluster, fleet.namespace, "alice")[0] == "Ready", "alice Ready")


async def test_a_deleted_stream_comes_back(fleet):
    nc = await nats.connect(fleet.nats.url, user_credentials=str(fleet.nats.creds))
    try:
        js = nc.jetstream()
        await js.delete_stream(subjects.HEARTBEAT_STREAM)

        async def back() -> bool:
            try:
                await js.stream_info(subjects.HEARTBEAT_STREAM)
            except NotFoundError:
                return False
            return True

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not await back():
            assert asyncio.get_running_loop().time() < deadline, \
                f"{subjects.HEARTBEAT_STREAM} not recreated\n{fleet.operator.log()[-3000:]}"
            await asyncio.sleep(0.25)
    finally:
        await nc.close()


# ---------------------------------------------------------------------- the worker pool
async def test_the_adjust_pool_follows_the_fleet(fleet):
    """One worker per user here (--users-per-worker 1): three users, three replicas; two
    deleted, back to one."""
    await fleet.until(lambda: fleet.replicas() == 1, "one replica for alice")
    for example in ("bob-pro.yaml", "dave-enterprise.yaml"):
        fleet.cluster.kubectl("apply", "-n", fleet.namespace, "-f", str(EXAMPLES / example))
    await fleet.until(lambda: fleet.replicas() == 3, "three replicas for three users")
    assert fleet.operator.metric("mt5fleet_operator_worker_replicas") == 3
    fleet.cluster.kubectl("delete", "-n", fleet.namespace, "tradingclient", "bob", "dave", "--timeout=60s")
    await fleet.until(lambda: fleet.replicas() == 1, "back to one replica")
    assert fleet.secret(bootstrap_secret_name("bob")) is None


# ---------------------------------------------------------------------- restart
async def test_a_restarted_operator_changes_nothing(fleet):
    await fleet.until(lambda: fleet.replicas() == 1 and phase(fleet.cluster, fleet.namespace, "alice")[0] == "Ready",
                      "alice Ready, one replica")
    before = fleet.client("alice")
    assert fleet.operator.stop() == 0
    fleet.start_operator("life-again")
    await fleet.until(lambda: fleet.operator.metric("mt5fleet_operator_leader") == 1, "the new process leads", 60)
    await fleet.resyncs(3)   # the resume, then the timers
    events = fleet.audit_since(0)
    writes = sorted({(what(e), e["objectRef"].get("name")) for e in events
                     if e["verb"] in WRITES and what(e)[1] != "leases"})
    assert writes == [], f"the restarted operator wrote {writes}"
    assert [e for e in events if what(e) == ("", "secrets", "get")] == []
    after = fleet.client("alice")
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert fleet.replicas() == 1
