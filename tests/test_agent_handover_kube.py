"""Hand-over in a cluster (issue 16): the operator, on the real API server (kube_harness) and
an operator-mode nats-server with TLS, writes alice's credentials into her bootstrap Secret
(KubernetesSecretStore); ``mt5fleet agent bundle --user alice --namespace NS`` builds the
bundle from that Secret with a kubeconfig that may read only it; ``agent init`` unpacks it
and the credentials in it work against the real nats-server, over TLS with the bundle's CA.
Nothing secret but the NATS credentials is in the clear.

Then the operator revokes them (alice paused: a new account JWT with the revocation, pushed
to the server), and ``mt5fleet agent doctor`` on the VPS says in plain words that the server
refuses them and what to do, exits non-zero, and prints nothing secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import kubernetes
import pytest
from operator_harness import stored_body
from operator_process import operator_kubeconfig, prepare_namespace

from mt5fleet.client.adapters.config_file import load_settings
from mt5fleet.launcher.cli import main
from mt5fleet.operator.adapters.appliers import AGENT_KEY_KEY, CREDS_KEY, bootstrap_secret_name
from mt5fleet.operator.adapters.nats_accounts import create_trust_chain
from mt5fleet.operator.adapters.secret_informer import SecretInformer
from mt5fleet.operator.adapters.secret_store import KubernetesSecretStore
from mt5fleet.operator.adapters.tenant_accounts import tenant_secret_name
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core.admission import parse_resource
from mt5fleet.operator.core.models import TradingClientStatus
from mt5fleet.operator.core.nats_creds import parse_creds
from mt5fleet.operator.core.nats_jwt import decode_user
from mt5fleet.operator.core.nats_keys import NKey
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn, tlsgen
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats, TlsFiles

pytestmark = pytest.mark.timeout(900)   # a cold cache builds the API server first

# An NKey seed of any kind (operator, account, user...): base32 after "S" and the kind.
SEED = re.compile(rb"S[OAUNCPX][A-Z2-7]{56}")
PASSPHRASE = "correct horse battery staple"


@dataclasses.dataclass
class Platform:
    namespace: str
    server: EmbeddedNats
    ca: Path
    service: object            # the platform's full-access NATS connection
    running: runtime.Running
    core: object               # CoreV1Api as the operator's ServiceAccount
    folder: Path
    secrets_in_play: list[bytes]


@pytest.fixture
def namespace(kube_cluster) -> str:
    name = f"ho-{uuid.uuid4().hex[:8]}"
    prepare_namespace(kube_cluster, name)
    return name


def _api(kubeconfig: Path) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


@contextlib.asynccontextmanager
async def platform(kube_cluster, namespace: str, folder: Path) -> AsyncIterator[Platform]:
    """The operator's runtime (in this process) on its ServiceAccount, its Secrets through
    the watch-fed store as in the chart; NATS in JWT operator mode behind TLS."""
    chain = create_trust_chain()
    tls = tlsgen.generate(folder / "tls")
    with EmbeddedNats(server_name="mt5fleet-test-handover", store_dir=folder / "store", operator=chain.server_mode(),
                      tls=TlsFiles(tls.server_cert, tls.server_key)) as server:
        options = runtime.embedded_options(chain, server.url, folder, http_host="127.0.0.1", http_port=0,
                                           agent_ca_file=tls.ca_cert)
        options = dataclasses.replace(options, nats=dataclasses.replace(options.nats, tls_ca=str(tls.ca_cert)))
        service = await natsconn.connect(dataclasses.replace(options.nats, reconnect=False))
        await bootstrap.bootstrap(service.jetstream(), subjects.build_layout())
        kubeconfig = operator_kubeconfig(kube_cluster, namespace, folder, "handover-operator")
        informer = SecretInformer(_api(kubeconfig).configuration, namespace)
        await informer.start()
        core = kubernetes.client.CoreV1Api(_api(kubeconfig))
        running = await runtime.start(options, KubernetesSecretStore(core, namespace, cache=informer))
        # Every secret of the platform's: the trust chain's seeds (operator, accounts, service users).
        in_play = SEED.findall(chain.to_json().encode())
        assert len(in_play) >= 6
        try:
            yield Platform(namespace, server, tls.ca_cert, service, running, core, folder, [*in_play, b"m-demo-2"])
        finally:
            await running.close()
            await informer.stop()
            await service.close()


def handover_kubeconfig(cluster, namespace: str, user_id: str) -> Path:
    """Who hands agents over: a user that may `get` the one bootstrap Secret, nothing else."""
    name = bootstrap_secret_name(user_id)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": f"handover-{user_id}", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [name]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": f"handover-{user_id}", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"handover-{user_id}"},
               "subjects": [{"kind": "ServiceAccount", "name": "handover", "namespace": namespace}]}
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}))
    return cluster.service_account_kubeconfig(namespace, "handover")


def secret_in_cluster(cluster, namespace: str, name: str) -> dict[str, bytes]:
    body = cluster.kubectl_json("get", "secret", name, "-n", namespace)
    return {key: base64.b64decode(value) for key, value in (body.get("data") or {}).items()}


async def cli(*argv: str) -> int:
    """The CLI runs its own event loop: off this one."""
    return await asyncio.to_thread(main, list(argv))


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def assert_only_the_nats_creds_in_the_clear(files: dict[str, bytes], in_play: list[bytes]) -> str:
    """The one seed in the bundle is alice's NATS user seed, inside user.creds, and it is
    the key of the JWT beside it; no other secret of the platform is anywhere in it."""
    for name, body in files.items():
        if name != "user.creds":
            assert not SEED.search(body), f"an NKey seed in {name}"
        for secret in in_play:
            assert secret not in body, f"a platform secret in {name}"
    token, seed = parse_creds(files["user.creds"].decode())
    assert SEED.findall(files["user.creds"]) == [seed.encode()] and seed.startswith("SU")
    assert NKey.from_seed(seed).public_key == decode_user(token).claims.subject
    return token


async def reconcile(p: Platform, generation: int, status: TradingClientStatus, **spec) -> TradingClientStatus:
    client = parse_resource(stored_body("alice", generation, **spec), rules=False)
    result = await p.running.reconciler.reconcile(client, status)
    return result.status


async def test_bundle_from_the_operators_secret_works_and_doctor_says_when_it_is_revoked(
        kube_cluster, namespace, tmp_path, capsys):
    async with platform(kube_cluster, namespace, tmp_path) as p:
        status = await reconcile(p, 1, TradingClientStatus())
        assert status.phase == "Ready", status
        issued = secret_in_cluster(kube_cluster, namespace, bootstrap_secret_name("alice"))
        assert CREDS_KEY in issued and AGENT_KEY_KEY in issued
        tenant = secret_in_cluster(kube_cluster, namespace, tenant_secret_name("alice"))
        agent_key = issued[AGENT_KEY_KEY]
        tenant_seeds = [seed for value in tenant.values() for seed in SEED.findall(value)]
        assert tenant_seeds   # the tenant account's own keys
        p.secrets_in_play += [agent_key, base64.b64decode(agent_key), *tenant_seeds]

        # A kubeconfig that may read nothing but alice's Secret is enough; the operator's own
        # (no `get` on Secrets: it reads through its watch) is refused, in one plain line.
        refused = operator_kubeconfig(kube_cluster, namespace, tmp_path, "no-get")
        assert await cli("agent", "bundle", "--user", "alice", "--namespace", namespace, "--kubeconfig",
                         str(refused), "--out", str(tmp_path / "no.zip")) == 1
        err = capsys.readouterr().err
        assert "not allowed to read Secret mt5fleet-agent-alice" in err and "HTTP 403" in err
        assert "\n" not in err.strip() and not (tmp_path / "no.zip").exists()

        kubeconfig = handover_kubeconfig(kube_cluster, namespace, "alice")
        bundle = tmp_path / "alice.zip"
        assert await cli("agent", "bundle", "--user", "alice", "--namespace", namespace, "--kubeconfig",
                         str(kubeconfig), "--out", str(bundle)) == 0
        files = read_zip(bundle)
        assert files["user.creds"] == issued[CREDS_KEY] and files["ca.crt"] == p.ca.read_bytes()
        token = assert_only_the_nats_creds_in_the_clear(files, p.secrets_in_play)
        # With the MT5-password key: only sealed under the passphrase.
        sealed_bundle = tmp_path / "alice-key.zip"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MT5FLEET_BUNDLE_PASSPHRASE", PASSPHRASE)
            assert await cli("agent", "bundle", "--user", "alice", "--namespace", namespace, "--kubeconfig",
                             str(kubeconfig), "--out", str(sealed_bundle), "--with-agent-key") == 0
        sealed_files = read_zip(sealed_bundle)
        assert "agent.key.sealed" in sealed_files and "agent.key" not in sealed_files
        assert_only_the_nats_creds_in_the_clear(sealed_files, p.secrets_in_play)

        # On the VPS: unpacked, the credentials work over TLS against the real server.
        vps = tmp_path / "vps"
        assert await cli("agent", "init", str(bundle), "--dir", str(vps)) == 0
        config = vps / "agent.toml"
        settings = load_settings(str(config))
        assert settings.nats.servers == (p.server.url,) and p.server.url.startswith("tls://")
        await published_as_alice(p, settings)

        # The doctor agrees before the revocation (the terminal simulated: no MT5 here).
        simulate_terminal(config, tmp_path / "agent-data")
        capsys.readouterr()
        assert await cli("agent", "--config", str(config), "doctor") == 0, capsys.readouterr().out
        assert "ok   NATS credentials: valid and accepted by the server (not revoked)" in capsys.readouterr().out

        # The operator revokes them: alice paused.
        status = await reconcile(p, 2, status, paused=True)
        assert status.phase == "Paused"
        assert CREDS_KEY not in secret_in_cluster(kube_cluster, namespace, bootstrap_secret_name("alice"))
        code = await cli("agent", "--config", str(config), "doctor")
        out = capsys.readouterr().out
        with capsys.disabled():
            print(f"\nmt5fleet agent doctor, credentials revoked:\n{out}")
        assert code == 1, out
        [line] = [line for line in out.splitlines() if line.startswith("FIX  NATS credentials")]
        assert "refused" in line and "Authorization Violation" in line, line
        fix = out.split(line, 1)[1].splitlines()[1]
        assert "revoked" in fix and "new bundle" in fix and "agent init" in fix, fix
        assert f"ok   NATS {p.server.url}: reachable with TLS" in out       # the rest still said ok
        assert "checks passed: fix the lines marked FIX" in out
        creds_text = files["user.creds"].decode()
        for secret in (token.encode(), parse_creds(creds_text)[1].encode(), *p.secrets_in_play):
            assert secret not in out.encode()
        assert not SEED.search(out.encode())
        # And a bundle now says why there is nothing to hand over.
        assert await cli("agent", "bundle", "--user", "alice", "--namespace", namespace, "--kubeconfig",
                         str(kubeconfig), "--out", str(tmp_path / "paused.zip")) == 1
        assert "paused" in capsys.readouterr().err


async def published_as_alice(p: Platform, settings) -> None:
    """Connect as the agent does (its creds, the bundle's CA, its inbox prefix) and publish
    a heartbeat into the platform's stream: the PubAck proves the credentials and imports."""
    nats = settings.nats
    nc = await natsconn.connect(natsconn.NatsSettings(servers=nats.servers, creds_file=nats.creds_file,
                                                      tls_ca=nats.tls_ca, reconnect=False),
                                inbox_prefix=subjects.inbox_prefix("alice"))
    try:
        assert nc.connected_url.scheme == "tls"
        subject = subjects.user_subject("alice", subjects.Channel.HEARTBEAT)
        ack = await nc.jetstream(timeout=5).publish(subject, b"from the bundle")
    finally:
        await nc.close()
    stored = await p.service.jetstream().get_msg(ack.stream, ack.seq)
    assert stored.subject == subject and stored.data == b"from the bundle"


def simulate_terminal(config: Path, data_dir: Path) -> None:
    """No MetaTrader 5 on this host: the bundle's config with the simulated terminal, the
    NATS part left exactly as issued."""
    text = config.read_text()
    assert 'backend = "metatrader5"' in text
    text = text.replace('backend = "metatrader5"', 'backend = "simulated"')
    text = text.replace("\n[nats]", f"\ndata_dir = {json.dumps(str(data_dir))}\n\n[nats]", 1)
    config.write_text(text + '\n[simulated]\nbroker = "icm-raw"\nseed = 7\n')
