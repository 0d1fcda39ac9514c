"""`mt5fleet nats trust-chain` and `mt5fleet operator --crd` as a platform operator runs them."""

from __future__ import annotations

import stat
from pathlib import Path

from mt5fleet.launcher import cli
from mt5fleet.operator.adapters.nats_accounts import TrustChain
from mt5fleet.operator.core import crd
from mt5fleet.operator.core.nats_jwt import decode_user, parse_creds


def test_trust_chain_writes_private_files_that_fit_together(tmp_path, capsys):
    out, config, creds = tmp_path / "trust.json", tmp_path / "nats-jwt.conf", tmp_path / "creds"
    assert cli.main(["nats", "trust-chain", "--out", str(out), "--server-config", str(config),
                     "--creds-dir", str(creds)]) == 0
    chain = TrustChain.from_json(out.read_text())
    for path in (out, *(creds / f"{user}.creds" for user in ("service", "system", "signals", "worker"))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    service_jwt, _ = parse_creds((creds / "service.creds").read_text())
    assert decode_user(service_jwt).claims.subject == chain.service_user.public_key
    # The signal engine's user lives in the producer's own account: signals.> and its inbox only.
    producer = decode_user(parse_creds((creds / "signals.creds").read_text())[0]).claims
    assert producer.issuer_account == chain.producer_account.public_key
    assert (producer.permissions.pub.allow, producer.permissions.sub.allow) == (("signals.>",), ("_INBOX_signals.>",))
    # The workers' user: the platform account, with destroying and forging denied.
    worker = decode_user(parse_creds((creds / "worker.creds").read_text())[0]).claims
    assert worker.issuer_account == chain.app_account.public_key
    assert "$JS.API.STREAM.PURGE.>" in worker.permissions.pub.deny
    lines = config.read_text().splitlines()
    assert f'operator: "{chain.operator_jwt}"' in lines and "  type: full" in lines
    assert "SU" not in capsys.readouterr().out  # no seed on the terminal


def test_trust_chain_never_overwrites_an_existing_chain(tmp_path, capsys):
    out = tmp_path / "trust.json"
    out.write_text("keep me")
    assert cli.main(["nats", "trust-chain", "--out", str(out)]) == 1
    assert out.read_text() == "keep me" and "exists" in capsys.readouterr().err


def test_operator_crd_prints_the_committed_crd(capsys):
    assert cli.main(["operator", "--crd"]) == 0
    committed = Path(__file__).resolve().parents[1] / "deploy/helm/mt5fleet/crds/tradingclients.mt5fleet.io.yaml"
    assert capsys.readouterr().out == committed.read_text() == crd.render()


def test_leader_election_replaces_kopf_peering_in_the_manifests():
    """Same-priority kopf peers pause each other (issue 13): the operator runs standalone
    behind a Lease, so no KopfPeering is needed and the Role grants Leases instead."""
    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    assert not (deploy / "kopf" / "peering.yaml").exists()
    rules = [rule for doc in yaml.safe_load_all((deploy / "rbac/operator-role.yaml").read_text())
             if doc and doc["kind"] == "Role" for rule in doc["rules"]]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]
    lease = [r for r in rules if r["resources"] == ["leases"] and r.get("resourceNames")]
    assert lease and lease[0]["resourceNames"] == ["mt5fleet-operator"]
