"""Fault: the operator (local mode: ``runtime.start`` + ``LocalOperator``, as ``mt5fleet operator
--local`` and the demo run it) stopped dead in the middle of reconciling its fleet, twice, and
started again over the same secret store and NATS.

Each stop lands inside a tenant's provisioning: the moment the server receives a tenant
account's JWT (the test listens on the system account's claims-update subject), the operator's
task is cancelled and its connections are closed without draining, as a crash would leave them.
The third start converges: every user has its config entry, its bootstrap Secret with working
credentials, exactly one tenant account on the server (no orphan made by a start that forgot
an account it had pushed), no revocation, and the worker pool sized from the config bucket.
A fourth start over the converged state changes nothing: no account pushed, no config entry
written, no Secret rewritten, no scale call, every reconcile reporting no change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import RawCredentials
from operator_harness import jwt_nats
from waiting import wait_for

from mt5fleet.launcher.demo.users import examples_folder, prepare_clients, read_clients
from mt5fleet.operator.adapters import tenant_accounts
from mt5fleet.operator.adapters.appliers import CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import (
    CLAIMS_LIST_SUBJECT,
    CLAIMS_UPDATE_SUBJECT,
    TrustChain,
    fetch_account_jwt,
)
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.local import LocalOperator
from mt5fleet.operator.core.nats_jwt import decode_account, decode_user, parse_creds
from mt5fleet.operator.core.reconcile import worker_pool_size
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime.tasks import cancel_and_wait

USERS = 12
USERS_PER_WORKER = 4


class Deployment:
    """The adjustment-worker Deployment the operator scales (``appliers.Scaler``), as the
    API server keeps it: its replica count outlives any operator process."""

    def __init__(self, replicas: int) -> None:
        self.current = replicas
        self.scaled: list[int] = []

    async def replicas(self) -> int | None:
        return self.current

    async def scale(self, replicas: int) -> None:
        self.scaled.append(replicas)
        self.current = replicas


class Operator:
    """One operator process: started, then run until the test stops it (dead, or after a pass)."""

    def __init__(self, options: runtime.OperatorOptions, folder: Path, secrets: DirectorySecretStore,
                 deployment: Deployment) -> None:
        self.options, self.folder, self.secrets, self.deployment = options, folder, secrets, deployment
        self.running: runtime.Running | None = None
        self.local: LocalOperator | None = None
        self.task: asyncio.Task | None = None
        self.crashed = False

    async def start(self) -> Operator:
        self.running = await runtime.start(self.options, self.secrets, scaler=self.deployment)
        self.local = LocalOperator(self.folder, self.running.reconciler, self.secrets, poll_s=0.1)
        self.task = asyncio.create_task(self.local.run(asyncio.Event()), name="operator")
        return self

    def crash(self) -> None:
        """Cancel the work wherever it is (called from a NATS callback: no await)."""
        self.crashed = True
        self.task.cancel()

    async def dead(self) -> None:
        """What is left of a crash: the connections close without draining. Cancelled again:
        Python 3.11's ``asyncio.wait_for`` drops a cancellation that meets its result."""
        await cancel_and_wait([self.task])
        for connection in (self.running.nc, self.running.system_nc):
            await connection.close()

    def provisioned(self) -> bool:
        tracked = self.local.tracked.values()
        return len(tracked) == USERS and all(t.provisioned and t.status.phase for t in tracked)

    def changes(self) -> float:
        """Resources this process created, updated or deleted (mt5fleet_operator_changes_total)."""
        return sum(sample.value for metric in self.running.metrics.registry.collect()
                   if metric.name == "mt5fleet_operator_changes" for sample in metric.samples
                   if sample.name.endswith("_total"))


class ClaimsWatch:
    """Every account JWT pushed to the server, seen on the system account's update subject."""

    def __init__(self) -> None:
        self.tenant_pushes: list[tuple[str, str]] = []   # (user id, account public key)

    async def on_message(self, message: Any) -> None:
        claims = decode_account(message.data.decode()).claims
        if subjects.USER_ID_RE.fullmatch(claims.name or ""):  # tenant accounts are named by their user id
            self.tenant_pushes.append((claims.name, claims.subject))


async def accounts_by_name(system: Any) -> dict[str, list[str]]:
    """Every account the server's resolver holds, grouped by the name in its JWT."""
    reply = await system.request(CLAIMS_LIST_SUBJECT, b"", timeout=5)
    grouped: dict[str, list[str]] = {}
    for key in json.loads(reply.data)["data"]:
        token = await fetch_account_jwt(system, key)
        grouped.setdefault(decode_account(token).claims.name, []).append(key)
    return grouped


async def snapshot(service: Any, system: Any, secrets_dir: Path) -> dict[str, Any]:
    """What the operator owns, outside any operator process: config entries (revision and
    value), every secret file, the account JWTs the server serves."""
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    entries = {}
    for key in await kv.keys():
        entry = await kv.get(key)
        entries[key] = (entry.revision, hashlib.sha256(entry.value).hexdigest())
    files = {str(p.relative_to(secrets_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(secrets_dir.rglob("*")) if p.is_file()}
    accounts = {name: [await fetch_account_jwt(system, key) for key in keys]
                for name, keys in (await accounts_by_name(system)).items()}
    return {"config": entries, "secrets": files, "accounts": accounts}


class PushCounter:
    """The operator's own tenant-account pushes, counted where they return: a crash at the
    N-th happens in the operator's flow, right after the server took the account (a crash
    from the claims-update subscription came too late on a loaded machine: the operator had
    finished every tenant before the notice was handled)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.pushed = 0
        self.crash_at: tuple[int, Operator] | None = None
        real = tenant_accounts.push_account_jwt

        async def push(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            self.pushed += 1
            if self.crash_at is not None and self.pushed >= self.crash_at[0]:
                self.crash_at[1].crash()
                await asyncio.sleep(0)   # the cancellation lands here, inside the reconcile
            return result
        monkeypatch.setattr(tenant_accounts, "push_account_jwt", push)


async def test_the_operator_restarted_mid_reconcile_converges_and_then_changes_nothing(tmp_path, monkeypatch):
    folder, secrets_dir = tmp_path / "clients", tmp_path / "state" / "secrets"
    prepare_clients(folder, USERS, examples_folder())
    users = [c.spec.user_id for c in read_clients(folder)]
    async with jwt_nats(tmp_path) as (_server, service, options):
        options = dataclasses.replace(options, users_per_worker=USERS_PER_WORKER)
        chain = TrustChain.from_json(options.trust_file.read_text())
        system = await nats.connect(options.nats.servers[0], user_credentials=RawCredentials(
            chain.system_user.creds_text))
        watch = ClaimsWatch()
        await system.subscribe(CLAIMS_UPDATE_SUBJECT, cb=watch.on_message)
        deployment = Deployment(replicas=1)
        secrets = DirectorySecretStore(secrets_dir)
        counter = PushCounter(monkeypatch)
        try:
            # Two crashes, each the moment the server receives a tenant account: the first start
            # dies at its first tenant, the second after three more.
            for pushes in (1, 4):
                operator = Operator(options, folder, secrets, deployment)
                counter.crash_at = (counter.pushed + pushes, operator)
                await operator.start()
                await wait_for(lambda op=operator: op.crashed, "the operator stopped mid-reconcile", timeout=30)
                await operator.dead()
                assert not operator.provisioned(), "the operator finished before it was stopped"
            counter.crash_at = None

            # The third start converges.
            operator = await Operator(options, folder, secrets, deployment).start()
            await wait_for(operator.provisioned, "every TradingClient provisioned after the restarts", timeout=60)
            await wait_for(lambda: deployment.current == worker_pool_size(USERS, users_per_worker=USERS_PER_WORKER),
                           "the worker pool sized from the config bucket", timeout=30)
            await operator.dead()
            converged = await snapshot(service, system, secrets_dir)
            assert sorted(converged["config"]) == sorted(users)
            # One account per tenant, no revocation, and each agent's credentials are of it.
            twice = {name: len(tokens) for name, tokens in converged["accounts"].items() if len(tokens) > 1}
            assert not twice, f"tenants with more than one account on the server: {twice}"
            for user_id in users:
                [token] = converged["accounts"][user_id]
                account = decode_account(token).claims
                assert not account.revocations, (user_id, account.revocations)
                stored = await secrets.get(bootstrap_secret_name(user_id))
                user_jwt, _seed = parse_creds(stored[CREDS_KEY].decode())
                assert decode_user(user_jwt).claims.issuer_account == account.subject, user_id
            for user_id in users[:3]:  # and they connect
                agent = await nats.connect(options.nats.servers[0], allow_reconnect=False,
                                           user_credentials=str(secrets.path(bootstrap_secret_name(user_id),
                                                                             CREDS_KEY)),
                                           inbox_prefix=subjects.inbox_prefix(user_id))
                await agent.close()

            # A fourth start over the converged state: one full pass (drift repair) changes nothing.
            pushes, scaled = len(watch.tenant_pushes), list(deployment.scaled)
            operator = await Operator(options, folder, secrets, deployment).start()
            await wait_for(operator.provisioned, "the fourth start's first pass", timeout=60)
            await operator.local.scan(force=True)
            assert operator.changes() == 0
            await operator.dead()
            assert watch.tenant_pushes[pushes:] == [] and deployment.scaled == scaled
            assert await snapshot(service, system, secrets_dir) == converged
        finally:
            await system.close()
