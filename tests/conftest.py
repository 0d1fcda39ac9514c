"""Shared fixtures: a real nats-server with JetStream on a free loopback port."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

# Test helpers (factories) live beside the tests; importlib mode does not add this folder.
sys.path.insert(0, str(Path(__file__).parent))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    """One server for the session: tests that only publish/subscribe share it."""
    with EmbeddedNats(server_name="mt5fleet-test-session") as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[EmbeddedNats]:
    """A server of the test's own, for tests that stop, restart or fill it."""
    with EmbeddedNats(server_name="mt5fleet-test") as server:
        yield server


@pytest.fixture
async def nc(fresh_nats_server: EmbeddedNats) -> AsyncIterator:
    import nats

    client = await nats.connect(fresh_nats_server.url, max_reconnect_attempts=1)
    yield client
    await client.close()


# ---------------------------------------------------------------- NATS JWT (operator mode)

@pytest.fixture(scope="module")
def nats_trust_chain():
    """A fresh operator, system account and app account MT5FLEET (with its service user)."""
    from mt5fleet.operator.adapters.nats_accounts import create_trust_chain

    return create_trust_chain()


@pytest.fixture(scope="module")
def operator_nats_server(nats_trust_chain) -> Iterator[EmbeddedNats]:
    """A server of the module's own in JWT operator mode, trusting ``nats_trust_chain``,
    with the fleet's streams and buckets bootstrapped by the service user."""
    import asyncio

    with EmbeddedNats(server_name="mt5fleet-test-operator", operator=nats_trust_chain.server_mode()) as server:
        asyncio.run(_bootstrap_as(server.url, nats_trust_chain.service_user.creds_text))
        yield server


async def _bootstrap_as(url: str, creds_text: str) -> None:
    import nats
    from nats.aio.client import RawCredentials

    from mt5fleet.proto import subjects
    from mt5fleet.proto.runtime import bootstrap

    client = await nats.connect(url, user_credentials=RawCredentials(creds_text), allow_reconnect=False)
    try:
        await bootstrap.bootstrap(client.jetstream(), subjects.build_layout())
    finally:
        await client.close()


# ---------------------------------------------------------------- a real Kubernetes API server

@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory):
    """etcd and a real Kubernetes API server (tests/kube/apiserver, built from Debian's
    packages or reused from the cache: tests/kube_build.py) for the session, started the
    first time a test asks for it: TLS, RBAC enforced for ServiceAccount tokens, audit log.
    See kube_harness.KubeCluster for kubectl, kubeconfigs, tokens and the audit log."""
    from kube_harness import running_cluster

    with running_cluster(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def crd(kube_cluster):
    """The TradingClient CRD applied to the real API server and Established."""
    crds = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "mt5fleet" / "crds"
    kube_cluster.kubectl("apply", "-f", str(crds))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd/tradingclients.mt5fleet.io", "--timeout=30s")
    return kube_cluster


@pytest.fixture
def namespace(kube_cluster):
    """A new namespace of the test's own on the real API server."""
    import uuid

    name = f"t-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    return name
