"""NATS JWTs (the v2 claim format nats-server 2.9+ reads) and ``.creds`` files.

No maintained Python library does this (PyPI's ``nats-jwt`` 0.2 calls itself untested and
in development), so this module encodes the four claim kinds the operator needs:
operator (self-signed), account (signed by the operator or an operator signing key, with
its exports and imports), user (signed by the account or, with ``issuer_account``, an
account signing key) and activation (an exporting account's permission for one importing
account to import one subject, signed like a user). The
wire format follows nats-io/jwt v2: header ``{"typ":"JWT","alg":"ed25519-nkey"}``,
unpadded base64url segments, an Ed25519 signature of ``header.payload`` by the issuer's
NKey, and a ``jti`` that is the unpadded base32 of the SHA-256 of the claims without it
(the server treats the ``jti`` as an opaque id; this is the hash jwt.js uses).

Typed claims in, typed claims out: ``encode_*`` sign, ``decode_*`` verify the signature
against the ``iss`` key and the issuer kind the claim allows. Seeds never appear in a
``repr``: :class:`NKey` and the creds text are secrets.

This module is the token format (header, base64url segments, ``jti``; encoding and
decoding); its parts live beside it, one concern each: ``nats_keys`` (NKeys),
``nats_claims`` (the typed claims), ``nats_exports`` (exports, imports, activations),
``nats_creds`` (``.creds`` files). Import from this
module: the names in ``__all__`` are the interface.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import time
import types
from collections.abc import Mapping
from typing import Any

from mt5fleet.operator.core.nats_claims import (
    NO_LIMIT,
    AccountClaims,
    AccountLimits,
    Decoded,
    JetStreamLimits,
    NatsLimits,
    OperatorClaims,
    Permission,
    UserClaims,
    UserPermissions,
)
from mt5fleet.operator.core.nats_creds import format_creds, parse_creds
from mt5fleet.operator.core.nats_exports import (
    ActivationClaims,
    Export,
    ExportType,
    Import,
    ResponseType,
    export_from_json,
    export_json,
    import_from_json,
    import_json,
    subject_contained_in,
)
from mt5fleet.operator.core.nats_keys import (
    JwtError,
    KeyKind,
    NKey,
    public_key_kind,
    require_kind,
    require_signer,
    verify_signature,
)

ALGORITHM = "ed25519-nkey"
HEADER = {"typ": "JWT", "alg": ALGORITHM}
LIB_VERSION = 2


def claims_hash(claims: Mapping[str, Any]) -> str:
    """The ``jti``: base32 (unpadded) SHA-256 of the claims without their ``jti``."""
    body = {key: value for key, value in claims.items() if key != "jti"}
    return base64.b32encode(hashlib.sha256(_json(body)).digest()).decode().rstrip("=")


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    """Go's ``omitempty``: zero values are left out."""
    return {k: v for k, v in values.items() if v not in (0, "", False, None, [], {})}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("a JWT segment is not base64url") from None


# --------------------------------------------------------------------------- encoding

def encode_operator(claims: OperatorClaims, operator_key: NKey, *, issued_at: int | None = None) -> str:
    """Operator JWTs are self-signed: the key must be the operator's own."""
    require_kind(claims.subject, KeyKind.OPERATOR, "operator subject")
    if operator_key.public_key != claims.subject:
        raise JwtError("an operator JWT must be signed by the operator's own key")
    for key in claims.signing_keys:
        require_kind(key, KeyKind.OPERATOR, "operator signing key")
    if claims.system_account:
        require_kind(claims.system_account, KeyKind.ACCOUNT, "system account")
    nats = _compact({
        "signing_keys": list(claims.signing_keys),
        "system_account": claims.system_account,
        "account_server_url": claims.account_server_url,
        "strict_signing_key_usage": claims.strict_signing_key_usage,
        "type": "operator",
        "version": LIB_VERSION,
    })
    return _encode(claims.subject, claims.name, nats, operator_key, issued_at, expires=0)


def encode_account(claims: AccountClaims, signer: NKey, *, issued_at: int | None = None) -> str:
    """``signer`` is the operator key or one of its signing keys (the server checks which)."""
    require_kind(claims.subject, KeyKind.ACCOUNT, "account subject")
    require_signer(signer, KeyKind.OPERATOR, "account")
    for key in claims.signing_keys:
        require_kind(key, KeyKind.ACCOUNT, "account signing key")
    nats = _compact({
        "limits": _account_limits_json(claims.limits),
        "signing_keys": list(claims.signing_keys),
        "revocations": dict(sorted(claims.revocations.items())),
        "exports": [export_json(export) for export in claims.exports],
        "imports": [import_json(imported) for imported in claims.imports],
        "type": "account",
        "version": LIB_VERSION,
    })
    return _encode(claims.subject, claims.name, nats, signer, issued_at, expires=0)


def encode_user(claims: UserClaims, signer: NKey, *, issued_at: int | None = None) -> str:
    """``signer`` is the account key itself or one of the account's signing keys."""
    require_kind(claims.subject, KeyKind.USER, "user subject")
    require_kind(claims.issuer_account, KeyKind.ACCOUNT, "issuer account")
    require_signer(signer, KeyKind.ACCOUNT, "user")
    permissions = claims.permissions
    nats = _compact({
        "pub": _permission_json(permissions.pub),
        "sub": _permission_json(permissions.sub),
        "subs": claims.limits.subs,
        "data": claims.limits.data,
        "payload": claims.limits.payload,
        "bearer_token": claims.bearer_token,
        # Only a signing key needs to say which account it signs for.
        "issuer_account": claims.issuer_account if signer.public_key != claims.issuer_account else "",
        "type": "user",
        "version": LIB_VERSION,
    })
    return _encode(claims.subject, claims.name, nats, signer, issued_at, expires=claims.expires)


def encode_activation(claims: ActivationClaims, signer: NKey, *, issued_at: int | None = None) -> str:
    """``signer`` is the exporting account's key or one of its signing keys."""
    require_signer(signer, KeyKind.ACCOUNT, "activation")
    nats = _compact({
        "subject": claims.import_subject,
        "kind": claims.kind.value,
        "issuer_account": claims.issuer_account if signer.public_key != claims.issuer_account else "",
        "type": "activation",
        "version": LIB_VERSION,
    })
    return _encode(claims.subject, claims.name, nats, signer, issued_at, expires=claims.expires)


def _encode(subject: str, name: str, nats: dict[str, Any], signer: NKey, issued_at: int | None,
            *, expires: int) -> str:
    claims: dict[str, Any] = _compact({
        "exp": expires,
        "iat": int(time.time()) if issued_at is None else issued_at,
        "iss": signer.public_key,
        "name": name,
        "sub": subject,
        "nats": nats,
    })
    claims["jti"] = claims_hash(claims)
    signing_input = f"{_b64(_json(HEADER))}.{_b64(_json(claims))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"



def _account_limits_json(limits: AccountLimits) -> dict[str, Any]:
    # nats-io/jwt flattens NATS, account and JetStream limits into one object.
    flat = {k: v for k, v in dataclasses.asdict(limits).items() if k != "jetstream"}
    flat.update(dataclasses.asdict(limits.jetstream))
    return {k: v for k, v in flat.items() if v not in (0, False)}


def _permission_json(permission: Permission) -> dict[str, list[str]]:
    return _compact({"allow": list(permission.allow), "deny": list(permission.deny)})


# --------------------------------------------------------------------------- decoding

def decode_claims(token: str) -> tuple[dict[str, Any], str]:
    """Verify the signature against the token's own ``iss`` key; return (claims, type).
    Whether that issuer is *trusted* is the caller's question (see ``decode_*``)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated segments")
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
    except json.JSONDecodeError:
        raise JwtError("a JWT segment is not JSON") from None
    if not isinstance(header, dict) or str(header.get("typ", "")).upper() != "JWT" or header.get("alg") != ALGORITHM:
        raise JwtError(f"unsupported JWT header {header!r}: expected typ JWT, alg {ALGORITHM}")
    if not isinstance(claims, dict) or not isinstance(claims.get("nats"), dict):
        raise JwtError("not a NATS JWT: no 'nats' claims")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not verify_signature(issuer, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2])):
        raise JwtError("the JWT signature does not verify against its issuer")
    if claims.get("jti") != claims_hash(claims):
        raise JwtError("the JWT id does not match its claims")
    return claims, str(claims["nats"].get("type", ""))


def decode_operator(token: str) -> Decoded[OperatorClaims]:
    raw, nats = _decoded(token, "operator")
    if raw["iss"] != raw["sub"]:
        raise JwtError("an operator JWT must be self-signed")
    claims = OperatorClaims(
        subject=raw["sub"], name=raw.get("name", ""), signing_keys=tuple(nats.get("signing_keys", ())),
        system_account=nats.get("system_account", ""), account_server_url=nats.get("account_server_url", ""),
        strict_signing_key_usage=bool(nats.get("strict_signing_key_usage", False)))
    return _result(claims, raw)


def decode_account(token: str, *, trusted_operator: OperatorClaims | None = None) -> Decoded[AccountClaims]:
    """With ``trusted_operator``, the issuer must be that operator or one of its signing keys."""
    raw, nats = _decoded(token, "account")
    require_kind(raw["iss"], KeyKind.OPERATOR, "account issuer")
    if trusted_operator is not None and raw["iss"] not in (trusted_operator.subject, *trusted_operator.signing_keys):
        raise JwtError("the account JWT is not signed by the trusted operator or its signing keys")
    limits = nats.get("limits", {})
    account_limits = AccountLimits(**_present(AccountLimits, limits, skip="jetstream"),
                                   jetstream=JetStreamLimits(**_present(JetStreamLimits, limits)))
    claims = AccountClaims(subject=raw["sub"], name=raw.get("name", ""), limits=account_limits,
                           signing_keys=tuple(_signing_key(k) for k in nats.get("signing_keys", ())),
                           revocations=dict(nats.get("revocations", {})),
                           exports=tuple(export_from_json(e) for e in nats.get("exports") or ()),
                           imports=tuple(import_from_json(i) for i in nats.get("imports") or ()))
    return _result(claims, raw)


def decode_user(token: str, *, trusted_account: AccountClaims | None = None) -> Decoded[UserClaims]:
    """With ``trusted_account``, the issuer must be that account or one of its signing keys."""
    raw, nats = _decoded(token, "user")
    require_kind(raw["iss"], KeyKind.ACCOUNT, "user issuer")
    account = nats.get("issuer_account") or raw["iss"]
    if trusted_account is not None:
        if account != trusted_account.subject:
            raise JwtError("the user JWT belongs to another account")
        if raw["iss"] not in (trusted_account.subject, *trusted_account.signing_keys):
            raise JwtError("the user JWT is not signed by the account or one of its signing keys")
    claims = UserClaims(
        subject=raw["sub"], name=raw.get("name", ""), issuer_account=account,
        permissions=UserPermissions(pub=_permission(nats.get("pub")), sub=_permission(nats.get("sub"))),
        limits=NatsLimits(payload=nats.get("payload", 0), subs=nats.get("subs", 0), data=nats.get("data", 0)),
        bearer_token=bool(nats.get("bearer_token", False)), expires=int(raw.get("exp", 0)))
    return _result(claims, raw)


def decode_activation(token: str, *, trusted_exporter: AccountClaims | None = None) -> Decoded[ActivationClaims]:
    """With ``trusted_exporter``, the token must be that account's: signed by its key, or
    by one of its signing keys naming it as ``issuer_account`` (the server's check)."""
    raw, nats = _decoded(token, "activation")
    require_kind(raw["iss"], KeyKind.ACCOUNT, "activation issuer")
    exporter = nats.get("issuer_account") or raw["iss"]
    if trusted_exporter is not None:
        if exporter != trusted_exporter.subject:
            raise JwtError("the activation token is issued for another exporting account")
        if raw["iss"] not in (trusted_exporter.subject, *trusted_exporter.signing_keys):
            raise JwtError("the activation token is not signed by the exporter or one of its signing keys")
    try:
        claims = ActivationClaims(subject=raw["sub"], name=raw.get("name", ""), import_subject=nats["subject"],
                                  kind=ExportType(nats["kind"]), issuer_account=exporter,
                                  expires=int(raw.get("exp", 0)))
    except (KeyError, ValueError) as exc:
        raise JwtError(f"unreadable activation claims: {exc}") from None
    return _result(claims, raw)


def verify_import(imported: Import, *, importer: str, exporter: AccountClaims,
                  now: int | None = None) -> Decoded[ActivationClaims] | None:
    """Would the server honour this import of ``importer``'s? The checks of jwt's
    ``Import.Validate`` and the server's ``checkActivation``: an export of the same type
    covers the subject; if it requires a token, the token is the exporter's, for this
    importer, of this type, covers the subject, has not expired and is not revoked.
    Returns the decoded token (None for a public export); raises JwtError otherwise."""
    subject = imported.activation_subject
    if imported.account != exporter.subject:
        raise JwtError(f"import {subject!r} names account {imported.account}, not the exporter")
    export = next((e for e in exporter.exports if e.type is imported.type
                   and subject_contained_in(subject, e.subject)), None)
    if export is None:
        raise JwtError(f"the exporter has no {imported.type} export covering {subject!r}")
    if not export.token_req:
        return None
    if not imported.token:
        raise JwtError(f"export {export.subject!r} requires an activation token")
    decoded = decode_activation(imported.token, trusted_exporter=exporter)
    activation = decoded.claims
    if activation.subject != importer:
        raise JwtError(f"the activation token for {subject!r} is for another account")
    if activation.kind is not imported.type:
        raise JwtError(f"the activation token is for a {activation.kind}, the import is a {imported.type}")
    if not subject_contained_in(subject, activation.import_subject):
        raise JwtError(f"the activation token covers {activation.import_subject!r}, not {subject!r}")
    if activation.expires and activation.expires <= (int(time.time()) if now is None else now):
        raise JwtError(f"the activation token for {subject!r} has expired")
    if any(export.revocations.get(key, -1) >= decoded.issued_at for key in (importer, "*")):
        raise JwtError(f"the exporter revoked {importer}'s activation of {export.subject!r}")
    return decoded


def _decoded(token: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    raw, claim_type = decode_claims(token)
    if claim_type != kind:
        raise JwtError(f"expected a {kind} JWT, got {claim_type or 'an untyped'} one")
    if not isinstance(raw.get("sub"), str):
        raise JwtError("the JWT has no subject")
    return raw, raw["nats"]


def _result(claims: Any, raw: dict[str, Any]) -> Decoded[Any]:
    return Decoded(claims=claims, issuer=raw["iss"], issued_at=int(raw.get("iat", 0)), jti=raw["jti"],
                   raw=types.MappingProxyType(raw))


def _present(cls: type, values: Mapping[str, Any], skip: str = "") -> dict[str, Any]:
    """Go's zero value for every field the JSON left out (``omitempty`` wrote nothing)."""
    return {f.name: values.get(f.name, False if f.type == "bool" else 0)
            for f in dataclasses.fields(cls) if f.name != skip}


def _permission(value: Any) -> Permission:
    value = value or {}
    return Permission(allow=tuple(value.get("allow", ())), deny=tuple(value.get("deny", ())))


def _signing_key(value: Any) -> str:
    # A scoped signing key is an object {"kind": "user_scope", "key": ...}; a plain one a string.
    return value["key"] if isinstance(value, dict) else value


__all__ = [
    "ALGORITHM", "HEADER", "NO_LIMIT", "AccountClaims", "AccountLimits", "ActivationClaims", "Decoded",
    "Export", "ExportType", "Import", "JetStreamLimits", "JwtError", "KeyKind", "NKey", "NatsLimits",
    "OperatorClaims", "Permission", "ResponseType", "UserClaims", "UserPermissions", "claims_hash",
    "decode_account", "decode_activation", "decode_claims", "decode_operator", "decode_user", "encode_account",
    "encode_activation", "encode_operator", "encode_user", "format_creds", "parse_creds", "public_key_kind",
    "verify_import", "verify_signature",
]
