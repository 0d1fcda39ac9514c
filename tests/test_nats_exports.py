"""Exports, imports and activation tokens in NATS JWTs (nats-io/jwt v2 field names; no server)."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from mt5fleet.operator.core import nats_jwt as nj
from mt5fleet.operator.core.nats_exports import subject_contained_in

SECOND_NS = 1_000_000_000
IAT = 1_700_000_000


@pytest.fixture(scope="module")
def keys() -> dict[str, nj.NKey]:
    names = ("exporter", "exporter_signing", "importer", "other_importer", "stranger")
    return {"operator": nj.NKey.create(nj.KeyKind.OPERATOR),
            **{name: nj.NKey.create(nj.KeyKind.ACCOUNT) for name in names}}


def _payload(token: str) -> dict:
    text = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _exporter(keys, **changes) -> nj.AccountClaims:
    exports = (
        nj.Export(name="prices", subject="tc.*.prices", type=nj.ExportType.SERVICE, token_req=True,
                  response_type=nj.ResponseType.SINGLETON, response_threshold_ns=10 * SECOND_NS),
        nj.Export(name="commands", subject="tc.*.commands", type="stream", token_req=True),
        nj.Export(name="public", subject="pub.>", type="stream"),
        nj.Export(name="by-key", subject="keyed.*.x", type="service", account_token_position=2,
                  response_type="Stream", revocations={keys["other_importer"].public_key: IAT}),
    )
    base = dict(subject=keys["exporter"].public_key, name="PLATFORM", exports=exports,
                signing_keys=(keys["exporter_signing"].public_key,))
    return nj.AccountClaims(**{**base, **changes})


def _activation(keys, subject: str = "tc.alice.prices", kind: str = "service", importer: str = "importer",
                signer: str = "exporter_signing", **changes) -> str:
    claims = nj.ActivationClaims(subject=keys[importer].public_key, name=subject, import_subject=subject,
                                 kind=nj.ExportType(kind), issuer_account=keys["exporter"].public_key, **changes)
    return nj.encode_activation(claims, keys[signer], issued_at=IAT)


def _import(keys, subject: str = "tc.alice.prices", kind: str = "service", token: str = "") -> nj.Import:
    return nj.Import(name=subject, subject=subject, account=keys["exporter"].public_key, type=nj.ExportType(kind),
                     token=token)


# --------------------------------------------------------------------------- wire format

def test_activation_wire_format_and_round_trip(keys):
    token = _activation(keys)
    claims = _payload(token)
    assert claims["iss"] == keys["exporter_signing"].public_key
    assert claims["sub"] == keys["importer"].public_key
    assert claims["nats"] == {"subject": "tc.alice.prices", "kind": "service", "type": "activation", "version": 2,
                              "issuer_account": keys["exporter"].public_key}
    decoded = nj.decode_activation(token, trusted_exporter=_exporter(keys))
    assert decoded.claims.import_subject == "tc.alice.prices" and decoded.claims.kind is nj.ExportType.SERVICE
    assert decoded.claims.issuer_account == keys["exporter"].public_key and decoded.issued_at == IAT


def test_an_activation_signed_by_the_account_key_names_no_issuer_account(keys):
    token = _activation(keys, signer="exporter")
    assert "issuer_account" not in _payload(token)["nats"]
    assert nj.decode_activation(token, trusted_exporter=_exporter(keys)).claims.issuer_account == \
        keys["exporter"].public_key


def test_account_exports_and_imports_wire_format_and_round_trip(keys):
    exporter = _exporter(keys)
    token = nj.encode_account(exporter, keys["operator"], issued_at=IAT)
    exports = _payload(token)["nats"]["exports"]
    assert exports[0] == {"name": "prices", "subject": "tc.*.prices", "type": "service", "token_req": True,
                          "response_type": "Singleton", "response_threshold": 10 * SECOND_NS}
    assert exports[1] == {"name": "commands", "subject": "tc.*.commands", "type": "stream", "token_req": True}
    assert exports[3]["account_token_position"] == 2 and exports[3]["response_type"] == "Stream"
    assert exports[3]["revocations"] == {keys["other_importer"].public_key: IAT}
    assert nj.decode_account(token).claims == exporter

    imported = nj.Import(name="p", subject="tc.alice.prices", account=keys["exporter"].public_key, type="service",
                         token=_activation(keys), local_subject="prices", share=True)
    importer = nj.AccountClaims(subject=keys["importer"].public_key, name="alice", imports=(imported,))
    token = nj.encode_account(importer, keys["operator"], issued_at=IAT)
    assert _payload(token)["nats"]["imports"] == [{
        "name": "p", "subject": "tc.alice.prices", "account": keys["exporter"].public_key,
        "token": imported.token, "local_subject": "prices", "type": "service", "share": True}]
    assert nj.decode_account(token).claims == importer


# --------------------------------------------------------------------------- verification

def test_a_matching_import_verifies(keys):
    exporter = _exporter(keys)
    for subject, kind in (("tc.alice.prices", "service"), ("tc.alice.commands", "stream")):
        decoded = nj.verify_import(_import(keys, subject, kind, _activation(keys, subject, kind)),
                                   importer=keys["importer"].public_key, exporter=exporter)
        assert decoded is not None and decoded.claims.import_subject == subject
    assert nj.verify_import(_import(keys, "pub.x", "stream"), importer=keys["importer"].public_key,
                            exporter=exporter) is None  # public export: no token needed


@pytest.mark.parametrize(("why", "subject", "kind", "token_args", "match"), [
    ("no token", "tc.alice.prices", "service", None, "requires an activation token"),
    ("another importer's token", "tc.alice.prices", "service", {"importer": "other_importer"}, "another account"),
    ("another subject's token", "tc.bob.prices", "service", {"subject": "tc.alice.prices"}, "covers"),
    ("a stream token for a service", "tc.alice.prices", "service", {"kind": "stream"}, "is for a stream"),
    ("signed by a stranger", "tc.alice.prices", "service", {"signer": "stranger"}, "signing keys"),
    ("expired", "tc.alice.prices", "service", {"expires": IAT + 1}, "expired"),
    ("no such export", "tc.alice.secrets", "service", {"subject": "tc.alice.secrets"}, "no service export"),
    ("wrong import type", "tc.alice.prices", "stream", {"kind": "stream"}, "no stream export"),
])
def test_a_token_for_another_account_or_subject_is_refused(keys, why, subject, kind, token_args, match):
    token = "" if token_args is None else _activation(keys, **{"subject": subject, "kind": kind, **token_args})
    with pytest.raises(nj.JwtError, match=match):
        nj.verify_import(_import(keys, subject, kind, token), importer=keys["importer"].public_key,
                         exporter=_exporter(keys), now=IAT + 10)


def test_a_revoked_activation_is_refused(keys):
    base = _exporter(keys)
    imported = _import(keys, "keyed.x.x", "service", _activation(keys, "keyed.x.x", importer="other_importer"))
    # by-key revokes other_importer's tokens issued up to IAT; with token_req, its token is checked.
    exports = tuple(dataclasses.replace(e, token_req=True, account_token_position=0) if e.name == "by-key" else e
                    for e in base.exports)
    exporter = dataclasses.replace(base, exports=exports)
    with pytest.raises(nj.JwtError, match="revoked"):
        nj.verify_import(imported, importer=keys["other_importer"].public_key, exporter=exporter)


def test_an_activation_claiming_another_exporter_is_refused(keys):
    token = _activation(keys)
    other = nj.AccountClaims(subject=keys["stranger"].public_key, name="X",
                             signing_keys=(keys["exporter_signing"].public_key,))
    with pytest.raises(nj.JwtError, match="another exporting account"):
        nj.decode_activation(token, trusted_exporter=other)
    with pytest.raises(nj.JwtError, match="activation JWT"):
        nj.decode_activation(nj.encode_account(_exporter(keys), keys["operator"]))


def test_a_tampered_activation_does_not_verify(keys):
    header, payload, signature = _activation(keys).split(".")
    claims = _payload(f"{header}.{payload}.{signature}")
    claims["nats"]["subject"] = "tc.>"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(nj.JwtError, match="signature"):
        nj.decode_activation(f"{header}.{forged}.{signature}")


# --------------------------------------------------------------------------- claim checks

@pytest.mark.parametrize(("build", "match"), [
    (lambda a: nj.Export(name="x", subject="md.*", type="stream", response_type="Singleton"), "for services"),
    (lambda a: nj.Export(name="x", subject="md.*", type="stream", response_threshold_ns=1), "for services"),
    (lambda a: nj.Export(name="x", subject="tc.*.p", type="service", account_token_position=3), "must point"),
    (lambda a: nj.Export(name="x", subject="tc..p", type="service"), "valid NATS subject"),
    (lambda a: nj.Export(name="x", subject="md.*", type="queue"), "queue"),
    (lambda a: nj.Import(name="x", subject="md.A", account=a, type="stream", share=True), "only valid for services"),
    (lambda a: nj.Import(name="x", subject="md.A", account=a, type="stream", to="b", local_subject="c"), "replaces"),
    (lambda a: nj.AccountClaims(subject=a, name="A", exports=(
        nj.Export(name="x", subject="md.*", type="stream"), nj.Export(name="y", subject="md.EURUSD", type="stream"))),
     "overlap"),
    (lambda a: nj.AccountClaims(subject=a, name="A", imports=(
        nj.Import(name="x", subject="q.>", account=a, type="service"),
        nj.Import(name="y", subject="q.a", account=a, type="service"))), "overlap"),
])
def test_claims_the_server_would_reject_are_refused(keys, build, match):
    with pytest.raises((nj.JwtError, ValueError), match=match):
        build(keys["exporter"].public_key)


@pytest.mark.parametrize(("subject", "container", "contained"), [
    ("tc.alice.prices", "tc.*.prices", True), ("tc.alice.prices", "tc.>", True), ("tc.alice", "tc.*.prices", False),
    ("tc.alice.prices.x", "tc.*.prices", False), ("tc.*.prices", "tc.alice.prices", False),
    ("md.EURUSD", "md.EURUSD", True), ("md.EURUSD", "md.GBPUSD", False),
])
def test_subject_containment_as_jwt_defines_it(subject, container, contained):
    assert subject_contained_in(subject, container) is contained
