"""Secrets through a watch-fed cache (issue 13: ~5 uncached GETs per user and reconcile).

* the view's rules, pure (core.secret_cache): our writes readable at once, stale watch
  events ignored, a fresh list keeping what we wrote after it;
* the informer and the store on the real API server (kube_harness): read-your-writes, the
  watch following kubectl, a write refused because the cache was behind (409, 404) retried
  once the watch has caught up;
* the figure: Secret GETs in the API server's audit log for a reconcile at rest, without
  and with the cache, in the same run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import kubernetes
import pytest
from operator_harness import jwt_nats, stored_body
from operator_process import operator_kubeconfig, prepare_namespace, token_uid

from mt5fleet.operator.adapters.secret_informer import SecretInformer
from mt5fleet.operator.adapters.secret_store import MANAGED_BY, KubernetesSecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core.admission import parse_resource
from mt5fleet.operator.core.changes import Change
from mt5fleet.operator.core.models import TradingClientStatus
from mt5fleet.operator.core.secret_cache import CachedSecret, SecretView, older


def secret(name: str, version: str, **data: bytes) -> CachedSecret:
    return CachedSecret(name=name, version=version, data=data)


# ---------------------------------------------------------------------- the view, pure
def test_our_write_is_readable_at_once_and_an_older_event_does_not_undo_it():
    view = SecretView()
    assert view.put(secret("a", "10", k=b"created"))          # the ADDED event
    assert view.put(secret("a", "12", k=b"ours"))             # our replace's response
    assert not view.put(secret("a", "11", k=b"between"))      # the watch still catching up
    assert view.put(secret("a", "12", k=b"ours")) is False    # our own event: nothing new
    assert view.get("a").data == {"k": b"ours"}
    assert view.put(secret("a", "13", k=b"theirs"))           # a later change wins
    assert view.get("a").data == {"k": b"theirs"}


def test_a_deleted_secret_is_not_brought_back_by_an_event_from_before_the_delete():
    view = SecretView()
    view.put(secret("a", "10"))
    assert view.remove("a", "10")                             # our delete, at the version we knew
    assert not view.put(secret("a", "10"))                    # the ADDED event of the past
    assert view.get("a") is None
    view.remove("a", "14")                                    # the DELETED event
    assert view.put(secret("a", "20", k=b"new"))              # created again later
    assert not view.remove("a", "15")                         # a stale DELETED: the new one stays
    assert view.get("a").version == "20"


def test_a_fresh_list_replaces_the_view_but_keeps_our_later_writes():
    view = SecretView()
    for name, version in (("gone", "3"), ("kept", "4"), ("mine", "9"), ("deleted", "5")):
        view.put(secret(name, version))
    view.remove("deleted", "5")
    view.replace([secret("kept", "6"), secret("deleted", "5"), secret("new", "7")], version="8")
    # "gone" was not listed; "mine" was written after the list (9 > 8): its event is to come;
    # "deleted" was listed at the version we deleted: stale.
    assert {name: s.version for name, s in view.snapshot().items()} == {"kept": "6", "mine": "9", "new": "7"}
    assert view.gone == {}                                    # the list supersedes the tombstones


def test_versions_that_are_not_integers_are_never_judged_older():
    assert older("9", "10") and not older("10", "9") and not older("10", "10")
    assert not older("abc", "10") and not older("10", "abc")
    view = SecretView()
    view.put(secret("a", "x2"))
    assert view.put(secret("a", "x1"))                        # the watch's order decides


# ---------------------------------------------------------------------- on the real API server
def api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


@contextlib.asynccontextmanager
async def informer_for(kubeconfig: Path, namespace: str) -> AsyncIterator[SecretInformer]:
    informer = SecretInformer(api_client(kubeconfig).configuration, namespace)
    await informer.start()
    try:
        yield informer
    finally:
        await informer.stop()


async def until(predicate, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture
def namespace(kube_cluster) -> str:
    """A namespace as the chart leaves it: the operator's Role, the MT5-password Secrets."""
    name = f"sc-{uuid.uuid4().hex[:8]}"
    prepare_namespace(kube_cluster, name)
    return name


@pytest.mark.timeout(900)   # a cold cache builds the API server first
async def test_the_store_reads_its_writes_and_the_cache_follows_the_watch(kube_cluster, namespace, tmp_path):
    kubeconfig = operator_kubeconfig(kube_cluster, namespace, tmp_path, "store")
    async with informer_for(kubeconfig, namespace) as informer:
        assert informer.get("mt5-alice").data == {"password": b"m-demo-2"}   # listed at start
        store = KubernetesSecretStore(kubernetes.client.CoreV1Api(api_client(kubeconfig)), namespace, cache=informer)
        assert await store.put("x", {"k": b"1"}, {"mt5fleet.io/user": "x"}) is Change.CREATED
        assert await store.get("x") == {"k": b"1"}                           # before its watch event
        assert await store.put("x", {"k": b"2"}) is Change.UPDATED           # replaced at the written version
        assert await store.put("x", {"k": b"2"}) is Change.UNCHANGED
        assert informer.get("x").labels == {**MANAGED_BY, "mt5fleet.io/user": "x"}

        kube_cluster.kubectl("create", "secret", "generic", "from-kubectl", "-n", namespace, "--from-literal=a=b")
        await until(lambda: informer.get("from-kubectl") is not None, "a Secret created by kubectl in the view")
        kube_cluster.kubectl("delete", "secret", "from-kubectl", "-n", namespace)
        await until(lambda: informer.get("from-kubectl") is None, "a Secret deleted by kubectl gone from the view")
        assert await store.delete("x") is Change.DELETED
        assert await store.get("x") is None and await store.delete("x") is Change.UNCHANGED


@pytest.mark.timeout(900)
async def test_a_write_refused_because_the_cache_was_behind_is_retried_after_the_watch(kube_cluster, namespace,
                                                                                        tmp_path):
    """Someone else changes (then deletes) the Secret, and the store writes before the watch
    has told it: 409 (then 404) from the server, the watch catches up, the write succeeds."""
    kubeconfig = operator_kubeconfig(kube_cluster, namespace, tmp_path, "conflict")
    uid = token_uid(kube_cluster, kubeconfig)
    someone = kubernetes.client.CoreV1Api(api_client(kube_cluster.admin_kubeconfig))
    async with informer_for(kubeconfig, namespace) as informer:
        store = KubernetesSecretStore(kubernetes.client.CoreV1Api(api_client(kubeconfig)), namespace, cache=informer)
        await store.put("y", {"k": b"1"})
        await until(lambda: int(informer.version) >= int(informer.get("y").version), "the create's event seen")
        # Synchronous on the event loop's thread: the watch cannot deliver it before our put.
        theirs = someone.read_namespaced_secret("y", namespace)
        theirs.data = {"k": base64.b64encode(b"theirs").decode()}
        someone.replace_namespaced_secret("y", namespace, theirs)
        assert await store.put("y", {"k": b"ours"}) is Change.UPDATED
        assert await store.get("y") == {"k": b"ours"}
        someone.delete_namespaced_secret("y", namespace)
        assert await store.put("y", {"k": b"again"}) is Change.CREATED
        stored = kube_cluster.kubectl_json("get", "secret", "y", "-n", namespace)
        assert base64.b64decode(stored["data"]["k"]) == b"again"
    conflicts = [e for e in kube_cluster.audit_events() if e["user"].get("uid") == uid
                 and e["responseStatus"]["code"] in (404, 409)]
    assert sorted(e["responseStatus"]["code"] for e in conflicts) == [404, 409]


def grant_secret_get(cluster, namespace: str) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "uncached-secrets", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "uncached-secrets", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "uncached-secrets"},
               "subjects": [{"kind": "ServiceAccount", "name": "mt5fleet-operator", "namespace": namespace}]}
    listed = {"apiVersion": "v1", "kind": "List", "items": [role, binding]}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listed))


@pytest.mark.timeout(900)
async def test_a_reconcile_at_rest_gets_no_secret_from_the_api_server(kube_cluster, namespace, tmp_path, capsys):
    """The figure of issue 13, measured in the audit log: GETs of Secrets by one reconcile of
    a user whose resources are all as wanted, with the uncached store and with the cache."""
    grant_secret_get(kube_cluster, namespace)   # the uncached store reads by name; the chart no longer grants it
    gets = {}
    async with jwt_nats(tmp_path) as (_, _, options):
        client = parse_resource(stored_body("alice"), rules=False)
        for mode in ("uncached", "cached"):
            kubeconfig = operator_kubeconfig(kube_cluster, namespace, tmp_path, mode)
            uid = token_uid(kube_cluster, kubeconfig)
            async with contextlib.AsyncExitStack() as stack:
                cache = await stack.enter_async_context(informer_for(kubeconfig, namespace)) \
                    if mode == "cached" else None
                core = kubernetes.client.CoreV1Api(api_client(kubeconfig))
                running = await runtime.start(options, KubernetesSecretStore(core, namespace, cache=cache))
                stack.push_async_callback(running.close)
                first = await running.reconciler.reconcile(client, TradingClientStatus())
                mark = len(kube_cluster.audit_log.read_text().splitlines())
                again = await running.reconciler.reconcile(client, first.status)
                assert again.changes == () and again.status.phase == "Ready"
                lines = kube_cluster.audit_log.read_text().splitlines()[mark:]
                gets[mode] = sum(1 for e in map(json.loads, lines) if e["user"].get("uid") == uid
                                 and e["verb"] == "get" and (e.get("objectRef") or {}).get("resource") == "secrets")
    with capsys.disabled():
        print(f"\nSecret GETs per reconcile at rest: {gets}")
    assert gets["uncached"] >= 5 and gets["cached"] == 0, gets
