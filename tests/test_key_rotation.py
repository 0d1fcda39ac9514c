"""Rotating the operator signing key of a running platform, as a platform team does it with
`mt5fleet nats rotate-operator-key`, against a real nats-server in JWT operator mode.

Phase 1 trusts the new and the previous key, the operator re-signs every account it owns
(platform, signal producer, tenants) with the new key, phase 2 retires the previous key.
Throughout, the tenant's agent keeps working; afterwards an account signed by the previous
key (what the holder of a leaked key would make) is refused, and nothing it touched changed.
(The tenant account signing key's rotation: test_intruder.py and test_nats_credentials.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import nats.errors
import pytest
from waiting import eventually

from mt5fleet.launcher import cli
from mt5fleet.operator.adapters import nats_accounts as na
from mt5fleet.operator.adapters.jwt_issuer import tenant_limits
from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.adapters.tenant_accounts import TenantAccounts
from mt5fleet.operator.app import runtime
from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import permissions as pm
from mt5fleet.proto import subjects
from mt5fleet.proto.runtime import bootstrap, natsconn
from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats

TIER = nj.NatsLimits(payload=256 * 1024, subs=50, data=-1)
ACCESS = pm.user_access("ivy", ("EURUSD",), TIER)
STORED_IN = subjects.ACCOUNT_STREAM  # a file stream: memory streams do not survive the restarts here


@pytest.fixture
async def platform(tmp_path):
    chain = na.create_trust_chain()
    with EmbeddedNats(server_name="mt5fleet-test-rotate", store_dir=tmp_path / "store",
                      operator=chain.server_mode()) as server:
        service = await _connect(server, chain.service_user, tmp_path)
        await bootstrap.bootstrap(service.jetstream(timeout=5), subjects.build_layout())
        await service.close()
        trust = tmp_path / "trust.json"
        trust.write_text(chain.to_json())
        yield server, trust


async def _connect(server: EmbeddedNats, user: na.IssuedUser, folder: Path, **options: str) -> nats.NATS:
    creds = na.write_creds(folder / f"{user.name}-{user.public_key[:8]}.creds", user)
    return await natsconn.connect(natsconn.NatsSettings(servers=(server.url,), name=user.name, creds_file=str(creds),
                                                        reconnect=False, connect_timeout_s=2), **options)


async def _operator_pass(server: EmbeddedNats, trust: Path, folder: Path) -> None:
    """What an operator (re)start and one resync do with the chain in ``trust``: the platform
    and producer accounts at start, the tenant's account in its reconcile."""
    chain = na.TrustChain.from_json(trust.read_text())
    secrets = DirectorySecretStore(folder / "secrets")
    (folder / "operator").mkdir(exist_ok=True)
    running = await runtime.start(runtime.embedded_options(chain, server.url, folder / "operator"), secrets)
    try:
        tenants = TenantAccounts(chain.platform, chain.operator_signing, running.system_nc, secrets,
                                 trusted_signers=chain.trusted_signers)
        await tenants.ensure("ivy", ACCESS.md_symbols, tenant_limits(ACCESS))
        if not (folder / "ivy.issued").exists():
            user = await tenants.issue_user("ivy", ACCESS.tenant_permissions)
            na.write_creds(folder / "ivy.issued", user)
    finally:
        await running.close()


async def _ivy_publishes(server: EmbeddedNats, folder: Path) -> str:
    jwt, seed = nj.parse_creds((folder / "ivy.issued").read_text())
    ivy = await _connect(server, na.IssuedUser("ivy", nj.decode_user(jwt).claims.subject, jwt, seed,
                                               nj.format_creds(jwt, seed)), folder,
                       inbox_prefix=subjects.inbox_prefix("ivy"))
    try:  # JetStream may still be recovering its streams after a restart
        return await eventually(lambda: _publish(ivy), "ivy's quote stored", retry_on=(nats.errors.Error,))
    finally:
        await ivy.close()


async def _publish(ivy: nats.NATS) -> str:
    ack = await ivy.jetstream(timeout=2).publish(subjects.user_subject("ivy", subjects.Channel.ACCOUNT), b"a")
    return ack.stream


def _cli(*argv: str) -> int:
    return cli.main(["nats", "rotate-operator-key", *argv])


async def test_an_operator_signing_key_rotation_keeps_the_fleet_and_then_refuses_the_previous_key(platform, tmp_path):
    server, trust = platform
    await _operator_pass(server, trust, tmp_path)
    assert await _ivy_publishes(server, tmp_path) == STORED_IN
    original = na.TrustChain.from_json(trust.read_text())
    old_key = original.operator_signing

    # Phase 1: both keys trusted; the servers reload; the tenant is untouched and works.
    assert await asyncio.to_thread(_cli, "--trust", str(trust)) == 0
    rotated = na.TrustChain.from_json(trust.read_text())
    assert rotated.previous_operator_signing == old_key and rotated.operator_signing != old_key
    assert set(rotated.trusted_signers) == {old_key.public_key, rotated.operator_signing.public_key}
    server.operator = rotated.server_mode()
    server.restart()
    assert await _ivy_publishes(server, tmp_path) == STORED_IN

    # Retiring before the operator re-signed is refused, naming what is still on the old key.
    system_creds = na.write_creds(tmp_path / "system.creds", rotated.system_user)
    retire = ("--trust", str(trust), "--retire", "--nats", server.url, "--creds", str(system_creds))
    assert await asyncio.to_thread(_cli, *retire) == 1
    assert na.TrustChain.from_json(trust.read_text()) == rotated

    # The operator restarts on the rotated chain and re-signs everything; now retire.
    await _operator_pass(server, trust, tmp_path)
    assert await asyncio.to_thread(_cli, *retire) == 0
    retired = na.TrustChain.from_json(trust.read_text())
    assert retired.trusted_signers == (rotated.operator_signing.public_key,)
    assert retired.previous_operator_signing is None
    server.operator = retired.server_mode()
    server.restart()
    assert await _ivy_publishes(server, tmp_path) == STORED_IN
    producer = await _connect(server, retired.producer_user, tmp_path)
    await producer.close()

    # The holder of the previous key: the operator's tooling never sends an account it
    # signed; a user of an account it minted is refused; ivy keeps working.
    system = await _connect(server, retired.system_user, tmp_path)
    try:
        assert await na.accounts_signed_by(system, old_key.public_key) == []
        account = (await TenantAccounts(retired.platform, retired.operator_signing, system,
                                        DirectorySecretStore(tmp_path / "secrets")).account_key("ivy")) or ""
        served = await na.fetch_account_jwt(system, account)
        closed = dataclasses.replace(nj.decode_account(served).claims, limits=nj.AccountLimits(conn=0))
        with pytest.raises(na.ClaimsUpdateError, match="not a trusted operator key"):
            await na.push_account_jwt(system, nj.encode_account(closed, old_key, issued_at=na.now_s() + 5),
                                      trusted_signers=retired.trusted_signers)
        assert await na.fetch_account_jwt(system, account) == served
        minted = await _minted_with(old_key, system)
    finally:
        await system.close()
    with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
        await _connect(server, minted, tmp_path)
    assert await _ivy_publishes(server, tmp_path) == STORED_IN


async def _minted_with(old_key: nj.NKey, system: nats.NATS) -> na.IssuedUser:
    """An account of its own signed by the previous key, sent to the resolver as the holder
    of the system user's credentials could (the server stores it, and does not trust it),
    and a user in it."""
    account, signing = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.ACCOUNT)
    claims = nj.AccountClaims(subject=account.public_key, name="mallory", signing_keys=(signing.public_key,))
    await na.push_account_jwt(system, nj.encode_account(claims, old_key), timeout_s=2)
    authority = na.AccountAuthority(claims, account_signer=signing, operator_signer=old_key)
    return authority.issue_user("mallory", nj.UserPermissions())
