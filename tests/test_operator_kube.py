"""The operator against a Kubernetes API: ``KubernetesSecretStore`` and ``DeploymentScaler``
through the real ``kubernetes`` client, and the whole cluster-mode operator (kopf, the
handlers, the store, the scaler) through kopf's own client, all against a small local
API server that implements the REST calls they make and enforces the operator's RBAC
(``deploy/rbac/operator-role.yaml``) the way the real one would: a call no rule allows
is refused with 403. So the Role is checked both ways: nothing the operator does is
refused, and every verb it grants is used."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import kubernetes
import pytest
import yaml
from aiohttp import web
from nats.js.errors import KeyNotFoundError
from operator_harness import example_documents, jwt_nats, merge_patch, stored_body
from waiting import wait_for

from mt5fleet.operator.adapters.appliers import (
    CREDS_KEY,
    DeploymentScaler,
    bootstrap_secret_name,
    ensure_worker_replicas,
)
from mt5fleet.operator.adapters.secret_store import MANAGED_BY, KubernetesSecretStore
from mt5fleet.operator.app import runtime
from mt5fleet.operator.app.service import Reconciler
from mt5fleet.operator.core import crd, models
from mt5fleet.operator.core.changes import Change
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import config_pb2

RBAC_FILE = Path(__file__).resolve().parents[1] / "deploy" / "rbac" / "operator-role.yaml"
NAMESPACE = "mt5fleet"
WORKERS = "mt5fleet-adjust"          # the Deployment the Role lets the operator scale


# ---------------------------------------------------------------------- RBAC, as the API server applies it
@dataclass(frozen=True)
class Request:
    """One API request in RBAC's terms."""
    verb: str
    group: str
    resource: str                    # "tradingclients/status" for a subresource
    namespace: str | None
    name: str | None


@dataclass(frozen=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]
    namespace: str | None            # None: a ClusterRole's rule

    def allows(self, request: Request) -> bool:
        return (request.group in self.groups and request.resource in self.resources and request.verb in self.verbs
                and (self.namespace is None or request.namespace == self.namespace)
                and (not self.names or request.name in self.names))


def rbac_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC_FILE.read_text()) if doc]


def rbac_rules() -> list[Rule]:
    """The rules the operator's ServiceAccount is bound to (Role in its namespace, ClusterRole everywhere)."""
    documents = rbac_documents()
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in documents if b["kind"].endswith("Binding")
             if any(s["name"] == "mt5fleet-operator" and s["namespace"] == NAMESPACE for s in b["subjects"])}
    return [Rule(frozenset(r["apiGroups"]), frozenset(r["resources"]), frozenset(r["verbs"]),
                 frozenset(r.get("resourceNames", ())), doc["metadata"].get("namespace"))
            for doc in documents if (doc["kind"], doc["metadata"]["name"]) in bound for r in doc["rules"]]


def granted(rules: list[Rule]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the rules grant."""
    return {(g, r, v) for rule in rules for g, r, v in itertools.product(rule.groups, rule.resources, rule.verbs)}


# ---------------------------------------------------------------------- the API server
@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = (
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "events", "Event"),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False),
    Kind("apps", "v1", "deployments", "Deployment", subresources=("scale",)),
    Kind(models.GROUP, models.VERSION, models.PLURAL, models.KIND, subresources=("status",)),
    # kopf's peering CRDs (docs/peering.yaml) have no status subresource: kopf patches the object.
    Kind("kopf.dev", "v1", "kopfpeerings", "KopfPeering"),
    Kind("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False),
)
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "reason": reason, "message": message}, status=code)


@dataclass
class FakeKube:
    """Just enough of kube-apiserver: discovery, objects with resourceVersions, list,
    watch (with replay from a resourceVersion), create/replace/merge-, JSON- and
    strategic-patch (as merge)/delete with finalizers, status and scale subresources,
    and RBAC. Every request is recorded with whether RBAC allowed it."""
    rules: list[Rule] | None = None                       # None: no RBAC
    objects: dict[tuple[Kind, str | None, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[Request, bool]] = field(default_factory=list)
    patches: list[tuple[Request, str, Any]] = field(default_factory=list)   # (request, content type, body)
    _log: list[tuple[int, Kind, str | None, dict[str, Any]]] = field(default_factory=list)
    _watchers: list[tuple[Kind, str | None, asyncio.Queue]] = field(default_factory=list)
    _version: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        for _, _, queue in self._watchers:
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def client(self) -> kubernetes.client.ApiClient:
        return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=self.url))

    # -------------------------------------------------------------- what a user (kubectl) does
    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object as given (a new spec bumps the generation), as ``kubectl apply`` would."""
        kind = self.kind_of(body)
        body = copy.deepcopy(dict(body))
        meta = body.setdefault("metadata", {})
        key = (kind, meta.get("namespace") if kind.namespaced else None, meta["name"])
        old = self.objects.get(key)
        if body.get("kind") == "Secret" and "stringData" in body:
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in body.pop("stringData").items()}
            body["data"] = {**body.get("data", {}), **encoded}
        if old is not None:
            meta["generation"] = old["metadata"]["generation"] + (old.get("spec") != body.get("spec"))
            meta.setdefault("finalizers", old["metadata"].get("finalizers", []))
            if "status" in old:
                body.setdefault("status", old["status"])
        return self._store(kind, key, body, "MODIFIED" if old else "ADDED")

    def delete(self, kind: Kind, namespace: str | None, name: str) -> None:
        """``kubectl delete``: gone at once, or marked for deletion while finalizers remain."""
        key = (kind, namespace, name)
        body = self.objects[key]
        if body["metadata"].get("finalizers"):
            body = copy.deepcopy(body)
            body["metadata"]["deletionTimestamp"] = "2026-01-05T10:00:00Z"
            self._store(kind, key, body, "MODIFIED")
        else:
            self._remove(key)

    def get(self, kind: Kind, name: str, namespace: str | None = NAMESPACE) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def kind_of(self, body: Mapping[str, Any]) -> Kind:
        [kind] = [k for k in KINDS if k.api_version == body["apiVersion"] and k.kind == body["kind"]]
        return kind

    # -------------------------------------------------------------- storage
    def _store(self, kind: Kind, key: tuple, body: dict[str, Any], event: str) -> dict[str, Any]:
        version = next(self._version)
        meta = body["metadata"]
        meta.update(resourceVersion=str(version), uid=meta.get("uid") or f"uid-{key[2]}")
        meta.setdefault("generation", 1)
        if key[1] is not None:
            meta["namespace"] = key[1]
        self.objects[key] = body
        self._publish(version, kind, key[1], {"type": event, "object": body})
        return body

    def _remove(self, key: tuple) -> None:
        body = self.objects.pop(key)
        self._publish(next(self._version), key[0], key[1], {"type": "DELETED", "object": body})

    def _publish(self, version: int, kind: Kind, namespace: str | None, event: dict[str, Any]) -> None:
        event = copy.deepcopy(event)
        self._log.append((version, kind, namespace, event))
        for watched, where, queue in self._watchers:
            if watched == kind and where in (None, namespace):
                queue.put_nowait(event)

    # -------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if discovery := self._discovery(parts):
            return web.json_response(discovery)
        try:
            kind, namespace, name, subresource = self._route(parts)
        except LookupError:
            return status(404, "NotFound", f"no route {request.path}")
        verb = {"GET": "get" if name else ("watch" if request.query.get("watch") in ("true", "1") else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[request.method]
        rbac = Request(verb, kind.group, kind.plural + (f"/{subresource}" if subresource else ""), namespace, name)
        allowed = self.rules is None or any(rule.allows(rbac) for rule in self.rules)
        self.requests.append((rbac, allowed))
        if not allowed:
            return status(403, "Forbidden", f"{rbac} is not allowed")
        body = await request.json() if request.can_read_body else None
        if verb == "patch":
            self.patches.append((rbac, request.content_type, body))
        key = (kind, namespace, name)
        if verb == "list":
            return self._list(kind, namespace)
        if verb == "watch":
            return await self._watch(request, kind, namespace)
        if verb == "create":
            return self._create(kind, namespace, body)
        if key not in self.objects:
            return status(404, "NotFound", f'{kind.plural} "{name}" not found')
        if subresource == "scale":
            return self._scale(key, body if verb == "patch" else None)
        if verb == "get":
            return web.json_response(self.objects[key])
        if verb == "delete":
            self._remove(key)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return self._write(key, verb, subresource, request.content_type, body)

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        groups = sorted({(k.group, k.version) for k in KINDS if k.group})
        if parts == ["version"]:
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
        if parts in (["api", "v1"], *(["apis", g, v] for g, v in groups)):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
            return {"kind": "APIResourceList", "groupVersion": "/".join(parts[1:]), "resources": [
                {"name": name, "singularName": "" if "/" in name else k.kind.lower(), "namespaced": k.namespaced,
                 "kind": k.kind, "verbs": VERBS}
                for k in kinds for name in (k.plural, *(f"{k.plural}/{s}" for s in k.subresources))]}
        return None

    def _route(self, parts: list[str]) -> tuple[Kind, str | None, str | None, str | None]:
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        [kind] = [k for k in KINDS if (k.group, k.version, k.plural) == (group, version, rest[0])]
        return kind, namespace, (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)

    def _list(self, kind: Kind, namespace: str | None) -> web.Response:
        items = [body for (k, ns, _), body in self.objects.items() if k == kind and namespace in (None, ns)]
        version = self._log[-1][0] if self._log else 0
        return web.json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                                  "metadata": {"resourceVersion": str(version)}, "items": items})

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        queue: asyncio.Queue = asyncio.Queue()
        for version, watched, where, event in self._log:   # what happened since the list
            if version > since and watched == kind and namespace in (None, where):
                queue.put_nowait(event)
        entry = (kind, namespace, queue)
        self._watchers.append(entry)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while (event := await queue.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.remove(entry)
        return response

    def _create(self, kind: Kind, namespace: str | None, body: dict[str, Any]) -> web.Response:
        key = (kind, namespace, body["metadata"].get("name") or f"event-{len(self._log)}")
        if key in self.objects:
            return status(409, "AlreadyExists", f'{kind.plural} "{key[2]}" already exists')
        body["metadata"]["name"] = key[2]
        return web.json_response(self._store(kind, key, body, "ADDED"), status=201)

    def _write(self, key: tuple, verb: str, subresource: str | None, content_type: str, body: Any) -> web.Response:
        current = copy.deepcopy(self.objects[key])
        if verb == "update":
            sent = body["metadata"].get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified")
            new = {**body, "metadata": {**current["metadata"], **body["metadata"]}}
        elif content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(current, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return status(422, "Invalid", str(exc))
        else:
            new = merge_patch(current, body)
        # A status subresource writes only the status; the main resource never does.
        if subresource == "status":
            new = {**current, "status": new.get("status")}
        elif "status" in key[0].subresources:
            new.pop("status", None)
            if "status" in current:
                new["status"] = current["status"]
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(key)
            return web.json_response(new)
        return web.json_response(self._store(key[0], key, new, "MODIFIED"))

    def _scale(self, key: tuple, patch: Any) -> web.Response:
        deployment = self.objects[key]
        if patch is not None:
            deployment = merge_patch(deployment, {"spec": {"replicas": patch["spec"]["replicas"]}})
            self._store(key[0], key, deployment, "MODIFIED")
        replicas = deployment["spec"].get("replicas", 0)
        spec = {"replicas": replicas} if replicas else {}   # omitempty, as the real server does
        return web.json_response({"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": spec,
                                  "metadata": {"name": key[2], "namespace": key[1],
                                               "resourceVersion": deployment["metadata"]["resourceVersion"]},
                                  "status": {"replicas": replicas}})


SECRET = next(k for k in KINDS if k.plural == "secrets")
DEPLOYMENT = next(k for k in KINDS if k.plural == "deployments")
TRADING_CLIENT = next(k for k in KINDS if k.plural == models.PLURAL)


def deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": WORKERS, "namespace": NAMESPACE},
            "spec": {"replicas": replicas}}


@pytest.fixture
async def kube():
    server = FakeKube(rules=rbac_rules())
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def core(kube):
    return kubernetes.client.CoreV1Api(kube.client())


@pytest.fixture
async def open_kube():
    """No RBAC: the store's own behaviour without its cache (one GET per read), which the
    operator's Role no longer grants (production reads through the watch-fed cache)."""
    server = FakeKube(rules=None)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


# ---------------------------------------------------------------------- KubernetesSecretStore
async def test_secret_store_creates_updates_leaves_alone_and_deletes(open_kube):
    store = KubernetesSecretStore(kubernetes.client.CoreV1Api(open_kube.client()), NAMESPACE)
    assert await store.get("mt5fleet-agent-bob") is None  # 404 on get: no such Secret
    data = {"bootstrap.json": b'{"user_id": "bob"}', "agent.key": bytes(range(32))}
    assert await store.put("mt5fleet-agent-bob", data, {"mt5fleet.io/user": "bob"}) is Change.CREATED
    stored = open_kube.get(SECRET, "mt5fleet-agent-bob")
    assert stored["metadata"]["labels"] == {**MANAGED_BY, "mt5fleet.io/user": "bob"}
    assert stored["type"] == "Opaque"
    assert base64.b64decode(stored["data"]["agent.key"]) == bytes(range(32))  # base64 on the wire, bytes back
    assert await store.get("mt5fleet-agent-bob") == data
    assert await store.put("mt5fleet-agent-bob", data) is Change.UNCHANGED
    assert await store.put("mt5fleet-agent-bob", {**data, CREDS_KEY: b"-----BEGIN"}) is Change.UPDATED
    assert (await store.get("mt5fleet-agent-bob"))[CREDS_KEY] == b"-----BEGIN"
    assert await store.delete("mt5fleet-agent-bob") is Change.DELETED
    assert await store.delete("mt5fleet-agent-bob") is Change.UNCHANGED  # NotFound: already done
    assert await store.get("mt5fleet-agent-bob") is None


async def test_a_put_without_labels_keeps_the_secrets_labels(open_kube):
    """The credentials go into the bootstrap Secret without labels: its user label stays."""
    store = KubernetesSecretStore(kubernetes.client.CoreV1Api(open_kube.client()), NAMESPACE)
    await store.put("mt5fleet-agent-bob", {"agent.key": b"k"}, {"mt5fleet.io/user": "bob"})
    assert await store.put("mt5fleet-agent-bob", {"agent.key": b"k", CREDS_KEY: b"c"}) is Change.UPDATED
    labels = open_kube.get(SECRET, "mt5fleet-agent-bob")["metadata"]["labels"]
    assert labels == {**MANAGED_BY, "mt5fleet.io/user": "bob"}


async def test_a_secret_changed_since_it_was_read_is_a_conflict_not_overwritten(open_kube):
    store = KubernetesSecretStore(kubernetes.client.CoreV1Api(open_kube.client()), NAMESPACE)
    await store.put("mt5fleet-agent-bob", {"agent.key": b"k"})
    read = store._read

    async def read_then_someone_writes(name: str) -> Any:
        secret = await read(name)
        open_kube.apply({**open_kube.get(SECRET, name), "data": {"agent.key": base64.b64encode(b"theirs").decode()}})
        return secret

    store._read = read_then_someone_writes
    with pytest.raises(kubernetes.client.ApiException) as refused:
        await store.put("mt5fleet-agent-bob", {"agent.key": b"ours"})
    assert refused.value.status == 409
    assert base64.b64decode(open_kube.get(SECRET, "mt5fleet-agent-bob")["data"]["agent.key"]) == b"theirs"


async def test_secret_store_errors_other_than_not_found_are_raised(kube, core):
    store = KubernetesSecretStore(core, "elsewhere")  # the Role grants nothing outside its namespace
    for call in (store.get("x"), store.delete("x")):
        with pytest.raises(kubernetes.client.ApiException) as refused:
            await call
        assert refused.value.status == 403


# ---------------------------------------------------------------------- DeploymentScaler
async def test_scaler_reads_and_merge_patches_the_scale_subresource(kube):
    kube.apply(deployment(2))
    scaler = DeploymentScaler(kubernetes.client.AppsV1Api(kube.client()), NAMESPACE, WORKERS)
    unchanged = await ensure_worker_replicas(scaler, 2)
    assert unchanged.change is Change.UNCHANGED and not kube.patches
    updated = await ensure_worker_replicas(scaler, 5)
    assert (updated.change, updated.detail) == (Change.UPDATED, "2 -> 5 replica(s)")
    [(request, content_type, body)] = kube.patches
    assert (request.resource, request.name) == ("deployments/scale", WORKERS)
    assert content_type == "application/merge-patch+json" and body == {"spec": {"replicas": 5}}
    assert kube.get(DEPLOYMENT, WORKERS)["spec"]["replicas"] == 5


async def test_a_pool_at_zero_reads_as_zero_replicas(kube):
    """The API server leaves replicas out of a Scale at 0; that is 0, not unknown."""
    kube.apply(deployment(0))
    scaler = DeploymentScaler(kubernetes.client.AppsV1Api(kube.client()), NAMESPACE, WORKERS)
    assert await scaler.replicas() == 0
    assert (await ensure_worker_replicas(scaler, 0)).change is Change.UNCHANGED


async def test_a_missing_worker_deployment_fails_no_users_reconcile(kube, caplog):
    """The pool is sized after each user's reconcile: its trouble must not fail the user's handler."""
    scaler = DeploymentScaler(kubernetes.client.AppsV1Api(kube.client()), NAMESPACE, WORKERS)  # 404
    reconciler = Reconciler(_ThreeServed(), {}, scaler=scaler)  # type: ignore[arg-type]  # sizing reads only the count
    assert await reconciler.resize_pool() is None
    assert "could not size the worker pool" in caplog.text


class _ThreeServed:
    """The one appliers call sizing makes (the config bucket's count, tested in test_operator_local)."""

    async def served_users(self) -> int:
        return 3


# ---------------------------------------------------------------------- RBAC
def test_rbac_objects_are_valid_kubernetes_objects():
    import kubernetes_validate

    for doc in rbac_documents():
        kubernetes_validate.validate(doc, "1.29.0", strict=True)
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_rbac_grants_no_wildcards_and_cluster_wide_only_what_kopf_observes():
    rules = rbac_rules()
    for rule in rules:
        assert "*" not in rule.groups | rule.resources | rule.verbs
        assert not rule.verbs & {"escalate", "bind", "impersonate", "deletecollection"}
    assert {(g, r, v) for g, r, v in granted([r for r in rules if r.namespace is None])} == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch")}
    # Secrets are read through the watch-fed cache (list + watch), never one GET per read.
    secrets = {v for _, r, v in granted(rules) if r == "secrets"}
    assert "get" not in secrets and {"list", "watch"} <= secrets


# ---------------------------------------------------------------------- the operator in cluster mode
async def run_until(operator: asyncio.Task, predicate: Any, what: str) -> None:
    """Wait for the operator to make ``predicate`` true (bounded), failing early if kopf stopped."""
    await wait_for(lambda: operator.done() or predicate(), what, timeout=30)
    if operator.done():
        operator.result()
        raise AssertionError(f"the operator stopped before {what}")


def phase(kube: FakeKube, name: str) -> str | None:
    body = kube.get(TRADING_CLIENT, name)
    return ((body or {}).get("status") or {}).get("phase")


def events(kube: FakeKube, name: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for (k, _, _), e in kube.objects.items()
            if k.plural == "events" and e["involvedObject"]["name"] == name]


def seed(kube: FakeKube) -> None:
    """What the chart and the user put in the cluster before the operator starts: its
    namespace, the MT5-password Secrets, the worker Deployment (at 0),
    the CRD, and bob's TradingClient (a resume for kopf)."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for doc in example_documents():
        if doc["kind"] == "Secret":
            kube.apply(with_namespace(doc))
    kube.apply(deployment(0))
    kube.apply(crd.build())
    kube.apply(with_namespace(stored_body("bob")))


def with_namespace(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "namespace": NAMESPACE}}


@contextlib.asynccontextmanager
async def operator_in(kube: FakeKube, options: runtime.OperatorOptions) -> AsyncIterator[asyncio.Task]:
    """runtime.cluster_operator run by kopf (as run_cluster does), reaching the fake API server."""
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url)

    registry, memo = runtime.cluster_operator(options, namespace=NAMESPACE, worker_deployment=WORKERS,
                                              login=login, api_client=kube.client)
    stop = asyncio.Event()
    operator = asyncio.create_task(kopf.operator(registry=registry, memo=memo, namespaces=[NAMESPACE],
                                                 standalone=True, stop_flag=stop))
    try:
        yield operator
    finally:
        stop.set()
        await asyncio.wait_for(operator, 30)


async def config_of(service: Any, user_id: str) -> config_pb2.ClientConfig:
    kv = await service.jetstream().key_value(subjects.CONFIG_BUCKET)
    return config_pb2.ClientConfig.FromString((await kv.get(user_id)).value)


async def test_the_operator_runs_under_its_role_and_uses_all_of_it(tmp_path, kube, caplog):
    caplog.set_level(logging.WARNING)
    seed(kube)
    async with jwt_nats(tmp_path) as (_, service, options), operator_in(kube, options) as operator:
        await run_until(operator, lambda: phase(kube, "bob") == "Ready", "bob Ready")
        kube.apply(with_namespace(stored_body("carol")))  # created while it runs
        await run_until(operator, lambda: phase(kube, "carol") == "Degraded", "carol Degraded")
        await run_until(operator, lambda: kube.get(DEPLOYMENT, WORKERS)["spec"]["replicas"] == 1,
                        "the worker pool sized for 2 users")
        secret = kube.get(SECRET, bootstrap_secret_name("bob"))
        assert secret["metadata"]["labels"]["mt5fleet.io/user"] == "bob" and CREDS_KEY in secret["data"]
        assert ("Created", "config created (generation 1)") in events(kube, "bob")
        bob = kube.get(TRADING_CLIENT, "bob")
        assert bob["metadata"]["finalizers"] == ["mt5fleet.io/finalizer"]
        assert any(key.startswith("mt5fleet.io/") for key in bob["metadata"]["annotations"])

        kube.apply(merge_patch(bob, {"spec": {"tier": "free"}}))   # kubectl edit: generation 2
        await run_until(operator, lambda: kube.get(TRADING_CLIENT, "bob")["status"]["observedGeneration"] == 2,
                        "bob's tier change reconciled")
        assert (await config_of(service, "bob")).tier_name == "free"

        kube.delete(TRADING_CLIENT, NAMESPACE, "bob")
        await run_until(operator, lambda: kube.get(TRADING_CLIENT, "bob") is None, "bob finalized")
        assert kube.get(SECRET, bootstrap_secret_name("bob")) is None
        with pytest.raises(KeyNotFoundError):
            await config_of(service, "bob")
    refused = sorted({request for request, allowed in kube.requests if not allowed}, key=str)
    assert refused == [], f"the Role refused: {refused}"
    used = {(r.group, r.resource, r.verb) for r, _ in kube.requests}
    # The Lease of the leader election is the elector's (app/elected.py), outside kopf: its
    # verbs are checked against the real API server's audit log (test_operator_e2e.py).
    leases = {g for g in granted(rbac_rules()) if g[0] == "coordination.k8s.io"}
    assert granted(rbac_rules()) - used - leases == set(), "granted but never used"
    assert not [r for r in caplog.records if "permission" in r.getMessage().lower()]
