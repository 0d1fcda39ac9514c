"""The operator as the Helm chart deploys it, reconciling a TradingClient applied after
`helm install`, on the suite's real API server (kube_harness) with a real nats-server in JWT
mode.

No kubelet runs pods there, so the test is the kubelet: it reads the installed operator
Deployment back with kubectl and starts ``mt5fleet`` (the image's entry point) as a separate
OS process with exactly that container's args and env. Only what a pod would have differs:
the volumes are materialized into a local folder from the Secrets and ConfigMap they name
(and each in-pod path in the args points there), POD_NAME/POD_NAMESPACE are what the
downward API would give, and the mounted ServiceAccount token is a kubeconfig issued for
the pod's ``serviceAccountName``. The Secrets the chart mounts are created first, with the
commands of docs/getting-started-platform-operator.md.

Then: bob and alice applied, both Ready; the adjust Deployment the chart created is scaled
by the operator to the pool size (``operator.usersPerWorker`` 1: two users, two replicas);
the audit log shows no request of the chart's ServiceAccount refused by the chart's RBAC.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helm_chart import ACCOUNT_ID, install_on, merged
from operator_process import EXAMPLES, OperatorProcess, free_port, nats_for_operator
from waiting import eventually

from mt5fleet.operator.adapters.appliers import CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import write_creds

# A cold cache builds the server inside the first set-up (./dev test builds it first).
pytestmark = pytest.mark.timeout(900)

RELEASE = "mt5fleet"
START_S = 60.0  # the process start: imports, kopf, NATS, the first reconciles
USERS = ("bob", "alice")


class PodProcess(OperatorProcess):
    """A container's args and env run as ``mt5fleet ARGS``: OperatorProcess's log, probes and
    stop, with the command the Deployment gives instead of the harness's."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], http_port: int, folder: Path) -> None:
        self.name, self.kubeconfig, self.http_port = name, Path(env["KUBECONFIG"]), http_port
        self.log_path = folder / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "mt5fleet.launcher.cli", *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=folder)


def materialize_volumes(cluster, namespace: str, pod: dict, container: dict, root: Path) -> dict[str, Path]:
    """What the kubelet mounts, as local folders: {mountPath: folder} for each of the
    container's volumeMounts, filled from the Secret or ConfigMap the volume names (its
    ``items`` only, when it lists them)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        folder = root / mount["mountPath"].strip("/")
        folder.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            source = volume["secret"]
            found = cluster.kubectl_json("get", "secret", source["secretName"], "-n", namespace)
            data = {key: base64.b64decode(value) for key, value in found["data"].items()}
        elif "configMap" in volume:
            source = volume["configMap"]
            found = cluster.kubectl_json("get", "configmap", source["name"], "-n", namespace)
            data = {key: value.encode() for key, value in found["data"].items()}
        else:
            assert "emptyDir" in volume, volume
            mounts[mount["mountPath"]] = folder
            continue
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            path = folder / item["path"]
            path.write_bytes(data[item["key"]])
            path.chmod(0o600)
        mounts[mount["mountPath"]] = folder
    return mounts


def container_process(cluster, namespace: str, deployment: dict, root: Path) -> tuple[list[str], dict[str, str]]:
    """The operator container of ``deployment`` as a local process: (args, env)."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "command" not in container  # the image's entry point, `mt5fleet`, runs the args
    mounts = materialize_volumes(cluster, namespace, pod, container, root)

    def local(arg: str) -> str:
        for mount_path, folder in mounts.items():
            if arg.startswith(mount_path + "/"):
                return str(folder / arg.removeprefix(mount_path + "/"))
        return arg

    args = [local(arg) for arg in container["args"]]
    assert not [a for a in args if a.startswith("/etc/") or a.startswith("/var/")], args  # every in-pod path mapped
    pod_name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
    downward = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif ref := variable["valueFrom"].get("fieldRef"):
            env[variable["name"]] = downward[ref["fieldPath"]]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            secret = cluster.kubectl_json("get", "secret", ref["name"], "-n", namespace)
            env[variable["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    # The mounted ServiceAccount token, as a kubeconfig (the process runs outside a pod).
    assert pod["automountServiceAccountToken"] is True
    env["KUBECONFIG"] = str(cluster.service_account_kubeconfig(namespace, pod["serviceAccountName"]))
    env["PYTHONUNBUFFERED"] = "1"
    return args, env


def create_secrets_as_the_guide_says(cluster, namespace: str, nats, folder: Path) -> None:
    """docs/getting-started-platform-operator.md, "Secrets the chart mounts", with the trust
    chain the test's nats-server trusts (nats_for_operator made it)."""
    worker_creds = write_creds(folder / "worker.creds", nats.chain.worker_user)
    cluster.kubectl("create", "namespace", namespace)
    for command in (["mt5fleet-trust", f"--from-file=trust.json={nats.trust}"],
                    ["mt5fleet-service-creds", f"--from-file=service.creds={nats.creds}"],
                    ["mt5fleet-worker-creds", f"--from-file=worker.creds={worker_creds}"],
                    ["mt5fleet-oanda", "--from-literal=token=not-used-by-the-operator"]):
        cluster.kubectl("-n", namespace, "create", "secret", "generic", *command)


def get(cluster, *args: str) -> dict | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return json.loads(result.stdout)


def test_the_operator_the_chart_deployed_reconciles_a_tradingclient_applied_after_install(kube_cluster, tmp_path):
    cluster, folder = kube_cluster, tmp_path
    namespace = f"chart-{uuid.uuid4().hex[:6]}"
    with nats_for_operator(folder / "nats") as nats:
        create_secrets_as_the_guide_says(cluster, namespace, nats, folder)
        http_port = free_port()
        values = merged(ACCOUNT_ID, {
            "nats": {"urls": [nats.url], "jetstream": {"replicas": 1}},
            "operator": {"httpPort": http_port, "usersPerWorker": 1}})
        install_on(cluster, namespace, values, release=RELEASE)
        cluster.kubectl("wait", "--for=condition=Established", "crd/tradingclients.mt5fleet.io", "--timeout=30s")
        adjust = get(cluster, "deployment", f"{RELEASE}-adjust", "-n", namespace)
        assert adjust["spec"]["replicas"] == 1  # the API server's default: the chart leaves it to the operator

        deployment = get(cluster, "deployment", f"{RELEASE}-operator", "-n", namespace)
        args, env = container_process(cluster, namespace, deployment, folder / "pod")
        assert args[0] == "operator" and "--kubeconfig" not in args and "--namespace" not in args
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        user = f"system:serviceaccount:{namespace}:{account}"
        operator = PodProcess("operator-pod", args, env, http_port, folder)

        def until(read, what: str, timeout: float = START_S):
            def describe() -> str:
                return f"{what}\n--- operator (alive: {operator.alive()})\n{operator.log()[-4000:]}"
            return asyncio.run(eventually(read, describe, timeout, interval=0.25))

        try:
            # After install: the trader's MT5 passwords, then the TradingClients.
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "secrets.yaml"))
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "bob-pro.yaml"),
                            "-f", str(EXAMPLES / "alice-free.yaml"))

            def phases() -> dict[str, tuple]:
                found = get(cluster, "tradingclients", "-n", namespace)["items"]
                return {tc["metadata"]["name"]: ((tc.get("status") or {}).get("phase"),
                                                 (tc.get("status") or {}).get("observedGeneration")) for tc in found}

            until(lambda: phases() == {name: ("Ready", 1) for name in USERS}, "bob and alice Ready")
            for name in USERS:
                secret = get(cluster, "secret", bootstrap_secret_name(name), "-n", namespace)
                assert secret is not None and CREDS_KEY in secret["data"]
            # The pool sized by the operator: ceil(2 users / usersPerWorker 1) = 2.
            pool = f"{RELEASE}-adjust"
            until(lambda: get(cluster, "deployment", pool, "-n", namespace)["spec"]["replicas"] == 2,
                  "the chart's adjust Deployment scaled to 2 by the operator")
            lease = get(cluster, "lease", f"{RELEASE}-operator", "-n", namespace)
            assert lease["spec"]["holderIdentity"].startswith(env["POD_NAME"] + "_")
            assert operator.http_get("/readyz")[0] == 200
        finally:
            exit_code = operator.stop()
        assert exit_code == 0, operator.log()[-3000:]

    events = [e for e in cluster.audit_events(user=user) if e.get("objectRef")]
    assert events, f"no audit events of {user}"
    refused = sorted({(e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("subresource"))
                      for e in events if e["responseStatus"]["code"] == 403})
    assert refused == [], f"the chart's RBAC refused the operator: {refused}"
    scaled = [e for e in events if e["objectRef"].get("subresource") == "scale" and e["verb"] == "patch"]
    assert scaled and all(e["objectRef"]["name"] == f"{RELEASE}-adjust" and e["responseStatus"]["code"] == 200
                          for e in scaled)
