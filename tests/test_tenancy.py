"""The pure tenant model: the platform's exports and one tenant's account (no server;
tests/test_tenant_accounts.py proves them against a real one)."""

from __future__ import annotations

import dataclasses

import pytest

from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core import tenancy
from mt5fleet.operator.core.tiers import DEFAULT_TIERS
from mt5fleet.proto import subjects

IAT = 1_700_000_000
SYMBOLS = ("GBPUSD", "EURUSD", "EURUSD")


@pytest.fixture(scope="module")
def keys() -> dict[str, nj.NKey]:
    return {name: nj.NKey.create(nj.KeyKind.ACCOUNT)
            for name in ("platform", "platform_signing", "alice", "bob", "producer", "producer_signing")}


@pytest.fixture(scope="module")
def platform(keys) -> nj.AccountClaims:
    base = nj.AccountClaims(subject=keys["platform"].public_key, name="MT5FLEET",
                            signing_keys=(keys["platform_signing"].public_key,),
                            limits=nj.AccountLimits(jetstream=nj.JetStreamLimits.unlimited()))
    return tenancy.platform_account(base)


def _tenant(keys, user_id: str = "alice", symbols=SYMBOLS) -> nj.AccountClaims:
    signer = tenancy.Platform(keys["platform"].public_key, keys["platform_signing"])
    return tenancy.tenant_account(user_id, symbols, tenancy.TenantLimits.of_tier(DEFAULT_TIERS["free"]),
                                  tenant=keys[user_id].public_key, platform=signer, issued_at=IAT)


def test_the_platform_exports_every_tenant_subject_once_and_only_with_a_token(platform):
    by_subject = {export.subject: export for export in platform.exports}
    assert set(by_subject) == {
        "tc.*.prices", "tc.*.account", "tc.*.symbols", "tc.*.executions", "tc.*.heartbeat", "tc.*.catchup",
        "tc.*.commands", "md.*", "$KV.tc-config.*", "$JS.API.DIRECT.GET.KV_tc-config.$KV.tc-config.*", "signals.*",
        # The economic calendar, read-only: its puts and the direct get of its one key (issue 17).
        "$KV.calendar.events", "$JS.API.DIRECT.GET.KV_calendar.$KV.calendar.events"}
    assert all(export.token_req for export in platform.exports)
    for subject in (*(subjects.user_wildcard(channel) for channel in tenancy.SERVICE_CHANNELS), "signals.*"):
        export = by_subject[subject]
        assert export.type is nj.ExportType.SERVICE and export.response_type is nj.ResponseType.SINGLETON
        assert export.response_threshold_ns == tenancy.RESPONSE_THRESHOLD_NS
    assert {by_subject[s].type for s in ("tc.*.commands", "md.*", "$KV.tc-config.*", "$KV.calendar.events")} == {
        nj.ExportType.STREAM}
    assert platform.limits.jetstream.enabled  # platform_account keeps what it was given


def test_a_tenant_account_imports_exactly_its_own_literal_subjects(keys):
    account = _tenant(keys)
    assert account.name == "alice" and account.exports == ()
    assert {(i.subject, i.type) for i in account.imports} == {
        *((f"tc.alice.{c}", nj.ExportType.SERVICE) for c in ("prices", "account", "symbols", "executions",
                                                              "heartbeat", "catchup")),
        ("$JS.API.DIRECT.GET.KV_tc-config.$KV.tc-config.alice", nj.ExportType.SERVICE),
        ("$JS.API.DIRECT.GET.KV_calendar.$KV.calendar.events", nj.ExportType.SERVICE),
        ("tc.alice.commands", nj.ExportType.STREAM), ("$KV.tc-config.alice", nj.ExportType.STREAM),
        ("$KV.calendar.events", nj.ExportType.STREAM),
        ("md.EURUSD", nj.ExportType.STREAM), ("md.GBPUSD", nj.ExportType.STREAM)}
    assert not any("*" in i.subject or ">" in i.subject for i in account.imports)
    assert {i.account for i in account.imports} == {keys["platform"].public_key}


def test_a_tenant_account_has_no_jetstream_and_its_tiers_limits(keys):
    limits = _tenant(keys).limits
    free = DEFAULT_TIERS["free"]
    assert not limits.jetstream.enabled
    assert (limits.conn, limits.subs, limits.payload, limits.data) == (
        tenancy.TENANT_CONNECTIONS, free.max_subscriptions, free.max_payload_bytes, free.max_data_bytes)
    assert (limits.leaf, limits.exports, limits.wildcards, limits.disallow_bearer) == (0, 0, False, True)


def test_every_import_carries_a_token_for_exactly_that_subject_and_tenant(keys, platform):
    alice = _tenant(keys)
    for imported in alice.imports:
        decoded = nj.verify_import(imported, importer=alice.subject, exporter=platform)
        assert decoded is not None
        assert decoded.claims.import_subject == imported.subject and decoded.claims.subject == alice.subject
        assert decoded.issuer == keys["platform_signing"].public_key and decoded.issued_at == IAT


def test_a_tenant_cannot_use_another_tenants_token_or_widen_its_subject(keys, platform):
    alice, bob = _tenant(keys), _tenant(keys, "bob")
    bobs_prices = next(i for i in bob.imports if i.subject == "tc.bob.prices")
    with pytest.raises(nj.JwtError, match="another account"):
        nj.verify_import(bobs_prices, importer=alice.subject, exporter=platform)
    alices_prices = next(i for i in alice.imports if i.subject == "tc.alice.prices")
    for subject in ("tc.bob.prices", "tc.*.prices"):
        with pytest.raises(nj.JwtError, match="covers"):
            nj.verify_import(dataclasses.replace(alices_prices, subject=subject), importer=alice.subject,
                             exporter=platform)


def test_a_tenant_account_round_trips_through_its_jwt(keys):
    account = _tenant(keys)
    operator = nj.NKey.create(nj.KeyKind.OPERATOR)
    assert nj.decode_account(nj.encode_account(account, operator, issued_at=IAT)).claims == account


@pytest.mark.parametrize(("user_id", "symbols"), [("Alice", ()), ("alice", ("md.>",)), ("a.b", ())])
def test_names_that_are_not_single_tokens_are_refused(keys, user_id, symbols):
    with pytest.raises(subjects.InvalidName):
        tenancy.tenant_subjects(user_id, symbols)


def test_the_platform_signer_must_be_an_account_key(keys):
    with pytest.raises(nj.JwtError):
        tenancy.Platform(keys["platform"].public_key, nj.NKey.create(nj.KeyKind.OPERATOR))


# --------------------------------------------------------------------------- the signal producer

def _producer(keys) -> nj.AccountClaims:
    signer = tenancy.Platform(keys["platform"].public_key, keys["platform_signing"])
    return tenancy.producer_account(producer=keys["producer"].public_key, platform=signer, issued_at=IAT,
                                    signing_keys=(keys["producer_signing"].public_key,))


def test_the_producer_account_imports_signals_only_with_a_token_for_it(keys, platform):
    producer = _producer(keys)
    assert producer.name == tenancy.PRODUCER_ACCOUNT and producer.exports == ()
    assert [(i.subject, i.type, i.account) for i in producer.imports] == [
        ("signals.*", nj.ExportType.SERVICE, keys["platform"].public_key)]
    decoded = nj.verify_import(producer.imports[0], importer=producer.subject, exporter=platform)
    assert decoded.claims.subject == producer.subject and decoded.issuer == keys["platform_signing"].public_key
    with pytest.raises(nj.JwtError, match="another account"):  # its token is its own
        nj.verify_import(producer.imports[0], importer=keys["alice"].public_key, exporter=platform)
    limits = producer.limits
    assert not limits.jetstream.enabled and limits.payload == tenancy.PRODUCER_PAYLOAD
    assert (limits.leaf, limits.exports, limits.wildcards, limits.disallow_bearer) == (0, 0, False, True)
    operator = nj.NKey.create(nj.KeyKind.OPERATOR)
    assert nj.decode_account(nj.encode_account(producer, operator, issued_at=IAT)).claims == producer


def test_a_producer_user_publishes_signals_and_reads_its_inbox_only():
    grants = tenancy.producer_permissions()
    assert grants.pub.allow == ("signals.>",) and grants.sub.allow == ("_INBOX_signals.>",)
    assert tenancy.producer_inbox_prefix("acme-engine") == "_INBOX_acme-engine"
