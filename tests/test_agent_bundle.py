"""`mt5fleet agent bundle` from what the operator issued (its bootstrap Secret, written by the
operator's own applier into a local --state folder) and `mt5fleet agent init` on the VPS:
one file, unpacked 0700/0600 into a folder with an agent.toml the agent loads as it is."""

from __future__ import annotations

import asyncio
import stat
import zipfile

import pytest

from mt5fleet.client.adapters.config_file import load_settings
from mt5fleet.client.core.bundle import BundleError
from mt5fleet.launcher.cli import main
from mt5fleet.operator.adapters.appliers import Connection, UserAppliers, bootstrap_secret_name
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore

CREDS = b"-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n------END NATS USER JWT------\n"
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _issue(state, user: str = "bob") -> dict[str, bytes]:
    """What the operator writes: the bootstrap Secret by its applier, then the credentials
    (synchronous: the CLI under test runs its own event loop)."""
    return asyncio.run(_issue_async(state, user))


async def _issue_async(state, user: str) -> dict[str, bytes]:
    secrets = DirectorySecretStore(state / "secrets")
    appliers = UserAppliers(None, secrets, None, Connection(("tls://nats.example.com:4222",), ca_pem=CA))
    await appliers.ensure_bootstrap_secret(user, True)
    name = bootstrap_secret_name(user)
    await secrets.put(name, {**(await secrets.get(name)), "user.creds": CREDS})
    return await secrets.get(name)


def test_bundle_then_init_gives_a_ready_agent_folder(tmp_path, monkeypatch, capsys):
    secret = _issue(tmp_path / "state")
    bundle = tmp_path / "bob.zip"
    monkeypatch.setenv("MT5FLEET_BUNDLE_PASSPHRASE", "correct horse battery staple")
    assert main(["agent", "bundle", "--user", "bob", "--state", str(tmp_path / "state"), "--out", str(bundle),
                 "--mt5-login", "51234567", "--mt5-server", "Broker-Live", "--with-agent-key"]) == 0
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert secret["agent.key"] not in b"".join(archive.read(n) for n in names)  # the key only sealed
    assert names == {"user.creds", "ca.crt", "agent.toml", "agent.key.sealed", "README.txt", "bundle.json"}

    folder = tmp_path / "vps" / "mt5fleet"
    assert main(["agent", "init", str(bundle), "--dir", str(folder)]) == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = {p.name: p for p in folder.iterdir()}
    assert set(files) == {"user.creds", "ca.crt", "agent.toml", "agent.key", "README.txt"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    assert files["agent.key"].read_bytes() == secret["agent.key"] and files["user.creds"].read_bytes() == CREDS
    settings = load_settings(str(files["agent.toml"]))
    assert settings.user_id == "bob" and settings.nats.servers == ("tls://nats.example.com:4222",)
    assert settings.nats.creds_file == str(files["user.creds"]) and settings.nats.tls_ca == str(files["ca.crt"])
    assert settings.mt5.login == 51234567 and settings.mt5.server == "Broker-Live"
    assert str(settings.mt5.key_file) == str(files["agent.key"])
    assert "doctor" in capsys.readouterr().out
    # Nothing is overwritten by a second init unless asked.
    assert main(["agent", "init", str(bundle), "--dir", str(folder)]) == 1
    assert "--force" in capsys.readouterr().err


def test_a_wrong_passphrase_or_a_missing_secret_says_so(tmp_path, monkeypatch, capsys):
    _issue(tmp_path / "state")
    monkeypatch.setenv("MT5FLEET_BUNDLE_PASSPHRASE", "correct horse battery staple")
    bundle = tmp_path / "bob.zip"
    assert main(["agent", "bundle", "--user", "bob", "--state", str(tmp_path / "state"), "--out", str(bundle),
                 "--with-agent-key"]) == 0
    monkeypatch.setenv("MT5FLEET_BUNDLE_PASSPHRASE", "not the passphrase at all")
    assert main(["agent", "init", str(bundle), "--dir", str(tmp_path / "vps")]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert main(["agent", "bundle", "--user", "carol", "--state", str(tmp_path / "state")]) == 1
    assert "no Secret mt5fleet-agent-carol" in capsys.readouterr().err


def test_without_the_key_the_config_says_how_to_make_one(tmp_path):
    _issue(tmp_path / "state")
    bundle = tmp_path / "bob.zip"
    assert main(["agent", "bundle", "--user", "bob", "--state", str(tmp_path / "state"), "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as archive:
        assert "agent.key.sealed" not in archive.namelist()
        assert "agent keygen" in archive.read("agent.toml").decode()


def test_a_file_that_is_no_bundle_is_refused(tmp_path):
    from mt5fleet.client.adapters.bundle_file import read_bundle

    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BundleError):
        read_bundle(junk)
