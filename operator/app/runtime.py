"""Assembling the operator: NATS connections, the trust chain, the secret store, the
reconciler; then either local mode (a folder) or kopf (a cluster).

What the operator holds of the NATS trust chain: the operator signing key (to sign the
platform account and every tenant's account), the platform account's signing key (to sign
tenants' activation tokens) and a system-account user (to push account JWTs). They come
from one JSON file, a Secret in a cluster (``mt5fleet nats trust-chain`` creates it). The
platform account's state and each tenant's account keys are persisted beside it, in the
secret store (``tenant_accounts``), and so is the signal producer's account when the trust
chain predates it (``signal_producer``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mt5fleet.operator.adapters.appliers import Connection, Scaler, UserAppliers
from mt5fleet.operator.adapters.jwt_issuer import JwtIssuer
from mt5fleet.operator.adapters.metrics import OperatorMetrics
from mt5fleet.operator.adapters.nats_accounts import (
    AccountAuthority,
    TrustChain,
    fetch_account_jwt,
    push_account_jwt,
    write_creds,
)
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore, SecretStore
from mt5fleet.operator.adapters.signal_producer import ensure_producer_account
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts
from mt5fleet.operator.app.local import LocalOperator
from mt5fleet.operator.app.service import Reconciler, wall_ms
from mt5fleet.operator.core.brokers import ANY_BROKER, ApprovedBrokers, approved_brokers_from_mapping
from mt5fleet.operator.core.nats_jwt import decode_account
from mt5fleet.operator.core.tiers import DEFAULT_TIERS, Tier, tiers_from_mapping
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import natsconn
from mt5fleet.proto.runtime.natsconn import NatsSettings
from mt5fleet.proto.runtime.probes import probe_app
from mt5fleet.proto.runtime.tasks import stop_on_signals
from mt5fleet.proto.subjects import JetStreamLayout

log = logging.getLogger("mt5fleet.operator")

ACCOUNT_STATE_SECRET = "mt5fleet-nats-account"
ACCOUNT_STATE_KEY = "state.json"


@dataclass(frozen=True)
class OperatorOptions:
    nats: NatsSettings                       # the service user's connection (full access in the app account)
    trust_file: Path                         # TrustChain JSON (secret)
    agent_nats_urls: tuple[str, ...] = ()    # what agents are told to connect to (default: nats.servers)
    agent_ca_file: Path | None = None        # CA agents verify the server with (TLS beyond the cluster)
    tiers_file: Path | None = None           # YAML/JSON {tierName: {maxTradingPairs: ...}}
    brokers_file: Path | None = None         # YAML/JSON {approvedBrokers: {companies: [...], servers: [...]}}
    http_host: str = "0.0.0.0"               # noqa: S104 - probes and metrics inside the cluster
    http_port: int = 8080
    users_per_worker: int = 2000
    # The JetStream layout the streams were bootstrapped with (mt5fleet nats bootstrap
    # --config / --replicas): what the operator recreates a deleted stream as.
    layout: JetStreamLayout = field(default_factory=JetStreamLayout)


@dataclass
class Running:
    reconciler: Reconciler
    nc: Any
    system_nc: Any
    metrics: OperatorMetrics
    creds_dir: Path   # the system user's creds file: nats-py re-reads it on every reconnect

    async def close(self) -> None:
        for connection in (self.nc, self.system_nc):
            try:
                await connection.drain()
            except Exception:  # already closed
                pass
        shutil.rmtree(self.creds_dir, ignore_errors=True)


def embedded_options(chain: TrustChain, url: str, folder: Path, **options: Any) -> OperatorOptions:
    """Options for an operator beside a nats-server of its own trusting ``chain`` (tests,
    benchmarks): the chain and the service user's credentials as private files in ``folder``."""
    trust = folder / "trust.json"
    with os.fdopen(os.open(trust, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(chain.to_json())
    creds = write_creds(folder / "service.creds", chain.service_user)
    return OperatorOptions(nats=NatsSettings(servers=(url,), creds_file=str(creds)), trust_file=trust, **options)


def load_tiers(path: Path | None) -> dict[str, Tier]:
    if path is None:
        return dict(DEFAULT_TIERS)
    import yaml

    raw = yaml.safe_load(path.read_text()) or {}
    return tiers_from_mapping(raw.get("tiers", raw) if isinstance(raw, Mapping) else None)


def load_brokers(path: Path | None) -> ApprovedBrokers:
    """The approved brokers of ``--brokers`` (every broker when there is no file)."""
    if path is None:
        return ANY_BROKER
    import yaml

    raw = yaml.safe_load(path.read_text()) or {}
    if isinstance(raw, Mapping) and "approvedBrokers" in raw:
        raw = raw["approvedBrokers"]
    try:
        return approved_brokers_from_mapping(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


async def start(options: OperatorOptions, secrets: SecretStore, *, scaler: Scaler | None = None,
                metrics: OperatorMetrics | None = None, now_ms: Callable[[], int] = wall_ms) -> Running:
    """``now_ms``: the clock status times and heartbeat ages are judged by (the demo's
    simulated market clock; the wall clock otherwise)."""
    chain = TrustChain.from_json(options.trust_file.read_text())
    nc = await natsconn.connect(options.nats)
    creds_dir = Path(tempfile.mkdtemp(prefix="mt5fleet-creds-"))
    system_nc = await natsconn.connect(_as_system_user(options.nats, chain, creds_dir))
    await _ensure_platform_account(chain, secrets, system_nc)
    await ensure_producer_account(chain, secrets, system_nc)  # after the platform's signals export
    tenants = TenantAccounts(chain.platform, chain.operator_signing, system_nc, secrets,
                             trusted_signers=chain.trusted_signers)
    issuer = JwtIssuer(tenants)
    ca = options.agent_ca_file.read_bytes() if options.agent_ca_file else None
    connection = Connection(nats_urls=options.agent_nats_urls or options.nats.servers, ca_pem=ca)
    appliers = UserAppliers(nc.jetstream(timeout=10), secrets, issuer, connection, layout=options.layout)
    metrics = metrics or OperatorMetrics()
    reconciler = Reconciler(appliers, load_tiers(options.tiers_file), scaler=scaler, metrics=metrics,
                            now_ms=now_ms, users_per_worker=options.users_per_worker,
                            brokers=load_brokers(options.brokers_file))

    async def on_correlations(message: Any) -> None:
        reconciler.on_correlations(message.data)

    await nc.subscribe(subjects.CORRELATIONS_SUBJECT, cb=on_correlations)
    return Running(reconciler=reconciler, nc=nc, system_nc=system_nc, metrics=metrics, creds_dir=creds_dir)


async def _authority(chain: TrustChain, secrets: SecretStore) -> AccountAuthority:
    stored = await secrets.get(ACCOUNT_STATE_SECRET)
    if stored and ACCOUNT_STATE_KEY in stored:  # what an earlier run signed
        return AccountAuthority.from_state_json(stored[ACCOUNT_STATE_KEY].decode(), account_signer=chain.app_signing,
                                                operator_signer=chain.operator_signing)
    return chain.authority()


async def _ensure_platform_account(chain: TrustChain, secrets: SecretStore, system_nc: Any) -> None:
    """The platform account as the servers serve it carries the fleet's exports (a trust
    chain made before tenant accounts, or a resolver that lost it, gets them now)."""
    authority = await _authority(chain, secrets)
    wanted = dataclasses.replace(authority.claims, exports=chain.authority().claims.exports)
    try:
        token = await fetch_account_jwt(system_nc, authority.account_public_key)
        served = decode_account(token).claims if chain.signed_by_current_key(token) else None
    except Exception:  # not served at all: push it
        served = None
    if served == wanted:  # and signed by today's operator signing key (after a rotation)
        return
    authority = AccountAuthority(wanted, account_signer=chain.app_signing, operator_signer=chain.operator_signing,
                                 last_issued_at=max(authority.last_issued_at, _issued_at(chain.app_account_jwt)))
    await push_account_jwt(system_nc, authority.account_jwt(), trusted_signers=chain.trusted_signers)
    await secrets.put(ACCOUNT_STATE_SECRET, {ACCOUNT_STATE_KEY: authority.state_json().encode()})


def _issued_at(token: str) -> int:
    return decode_account(token).issued_at


def _as_system_user(settings: NatsSettings, chain: TrustChain, folder: Path) -> NatsSettings:
    """The same servers and TLS, as the chain's system user (creds in a private file)."""
    path = write_creds(folder / "system.creds", chain.system_user)
    return dataclasses.replace(settings, creds_file=str(path), name=f"{settings.name}-system")


async def serve_http(metrics: OperatorMetrics, nc: Any, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(probe_app(metrics.registry, nc), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics and probes on %s", ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses))
    return runner


@dataclass
class NatsLink:
    """What /readyz reports on in cluster mode: the leader's NATS connection, once its
    start-up has made one. A replica without one is a follower, which only reads the Lease:
    it is ready, standing by is its job (a follower reported unready would also stall a
    rolling update)."""
    nc: Any = None

    @property
    def is_connected(self) -> bool:
        return self.nc is None or bool(self.nc.is_connected)


# ---------------------------------------------------------------------- local mode
async def run_local(options: OperatorOptions, folder: Path, state_dir: Path | None = None, *,
                    stop: asyncio.Event | None = None, scaler: Scaler | None = None) -> None:
    state_dir = state_dir or folder / ".mt5fleet"
    secrets = DirectorySecretStore(state_dir / "secrets")
    running = await start(options, secrets, scaler=scaler)
    running.metrics.leader.set(1)   # one process over one folder: it always reconciles
    runner = await serve_http(running.metrics, running.nc, options.http_host, options.http_port)
    local = LocalOperator(folder, running.reconciler, secrets)
    stop = stop or stop_on_signals()
    log.info("operator in local mode over %s (state in %s); metrics on :%d", folder, state_dir, options.http_port)
    try:
        await local.run(stop)
    finally:
        await runner.cleanup()
        await running.close()


# ---------------------------------------------------------------------- cluster (kopf)
def run_cluster(options: OperatorOptions, *, namespace: str | None = None, worker_deployment: str = "",
                kubeconfig: Path | None = None, election: Any = "default", resync_s: float | None = None) -> int:
    """kopf with our handlers, while this replica holds the Lease (``elected``); the
    Reconciler is built at start-up into kopf's memo. In a pod or from a kubeconfig: one
    code path (``kube_config.load``) for our client and kopf's login. ``election``: an
    ``elected.Election``, the default one, or None for a single replica without a Lease.
    /metrics and the probes are served from the start, by followers too.

    Namespaced on purpose: TradingClients, their password Secrets and the agents'
    bootstrap Secrets live in the operator's namespace, so its RBAC is a Role there and
    nothing cluster-wide but what kopf observes (deploy/rbac/operator-role.yaml)."""
    from mt5fleet.operator.adapters import kube_config
    from mt5fleet.operator.app import elected

    access = kube_config.load(kubeconfig)
    home = namespace or os.environ.get("POD_NAMESPACE", "default")
    metrics, link = OperatorMetrics(), NatsLink()
    registry, memo = cluster_operator(options, namespace=home, worker_deployment=worker_deployment,
                                      login=kopf_login(access), api_client=access.api_client, metrics=metrics,
                                      link=link, resync_s=resync_s)
    chosen = elected.Election() if election == "default" else election

    async def serve_and_run() -> int:
        runner = await serve_http(metrics, link, options.http_host, options.http_port)
        try:
            return await elected.run(registry, memo, home, access, chosen,
                                     leading=lambda held: metrics.leader.set(1 if held else 0))
        finally:
            await runner.cleanup()

    return asyncio.run(serve_and_run())


def kopf_login(access: Any) -> Callable[..., Any]:
    """kopf's login handler, from the same client configuration as ours (re-read on every
    login: an in-cluster token is rotated by its refresh hook)."""
    import kopf

    def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        config = access.configuration
        scheme, token = access.bearer()
        return kopf.ConnectionInfo(
            server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
            username=config.username or None, password=config.password or None, scheme=scheme, token=token,
            certificate_path=config.cert_file, private_key_path=config.key_file,
            trust_env=settings.networking.trust_env)

    return login


def cluster_operator(options: OperatorOptions, *, namespace: str, worker_deployment: str = "",
                     login: Callable[..., Any] | None = None,
                     api_client: Callable[[], Any] | None = None, metrics: OperatorMetrics | None = None,
                     link: NatsLink | None = None, resync_s: float | None = None) -> tuple[Any, Any]:
    """What kopf runs: the registry (our handlers, start-up, clean-up) and the memo the
    start-up fills with the Reconciler. How the API server is reached: ``login``, kopf's
    login handler; ``api_client``, the Kubernetes client of the secret store and the
    scaler (both by default from ``kube_config.load()``: in-cluster, else the kubeconfig).
    ``metrics`` and ``link`` are what the caller serves on /metrics and /readyz (its HTTP
    server outlives kopf, which runs only while this replica leads); ``resync_s``: the
    timer's interval (drift repair, AgentConnected)."""
    import kopf
    import kubernetes

    from mt5fleet.operator.adapters import kube_config
    from mt5fleet.operator.adapters.appliers import DeploymentScaler
    from mt5fleet.operator.adapters.secret_informer import SecretInformer
    from mt5fleet.operator.adapters.secret_store import KubernetesSecretStore
    from mt5fleet.operator.app import handlers

    if login is None or api_client is None:
        access = kube_config.load()
        login, api_client = login or kopf_login(access), api_client or access.api_client
    registry = kopf.OperatorRegistry()
    handlers.register(registry, interval_s=resync_s or handlers.RESYNC_INTERVAL_S)
    # A registry of our own has none of the login handlers kopf's default one carries:
    # without one, kopf starts with no credentials.
    kopf.on.login(registry=registry)(login)
    memo = kopf.Memo()
    memo.resync_s = resync_s or handlers.RESYNC_INTERVAL_S

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        handlers.configure(settings)
        client = api_client()
        core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
        scaler = DeploymentScaler(apps, namespace, worker_deployment) if worker_deployment else None
        # Secrets are read from a watch-fed cache, listed before anything reads one.
        memo.informer = SecretInformer(client.configuration, namespace)
        await memo.informer.start()
        secrets = KubernetesSecretStore(core, namespace, cache=memo.informer)
        running = await start(options, secrets, scaler=scaler, metrics=metrics)
        memo.reconciler, memo.running = running.reconciler, running
        if link is not None:
            link.nc = running.nc

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if getattr(memo, "running", None):
            await memo.running.close()
        if getattr(memo, "informer", None):
            await memo.informer.stop()

    return registry, memo
