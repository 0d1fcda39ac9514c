"""NATS JWT encoding and verification, NKeys and the creds file format (no server)."""

from __future__ import annotations

import base64
import hashlib
import json

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mt5fleet.operator.core import nats_jwt as nj


@pytest.fixture(scope="module")
def keys() -> dict[str, nj.NKey]:
    return {
        "operator": nj.NKey.create(nj.KeyKind.OPERATOR),
        "operator_signing": nj.NKey.create(nj.KeyKind.OPERATOR),
        "account": nj.NKey.create(nj.KeyKind.ACCOUNT),
        "account_signing": nj.NKey.create(nj.KeyKind.ACCOUNT),
        "user": nj.NKey.create(nj.KeyKind.USER),
    }


def _segments(token: str) -> tuple[dict, dict, bytes]:
    """Decoded independently of the module: base64url without padding, JSON, raw signature."""
    header, payload, signature = token.split(".")
    assert "=" not in token and "+" not in token and "/" not in token

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    return json.loads(unb64(header)), json.loads(unb64(payload)), unb64(signature)


def _user_claims(keys, **changes) -> nj.UserClaims:
    permissions = nj.UserPermissions(
        pub=nj.Permission(allow=("tc.alice.prices", "$JS.API.CONSUMER.INFO.TC_COMMANDS.catchup-alice")),
        sub=nj.Permission(allow=("tc.alice.commands", "_INBOX_alice.>"), deny=("tc.bob.>",)))
    base = dict(subject=keys["user"].public_key, name="alice", issuer_account=keys["account"].public_key,
                permissions=permissions, limits=nj.NatsLimits(payload=65536, subs=20, data=1 << 20))
    return nj.UserClaims(**{**base, **changes})


# --------------------------------------------------------------------------- keys

def test_keys_have_their_role_letter_and_hide_the_seed(keys):
    for name, prefix in (("operator", "O"), ("account", "A"), ("user", "U")):
        key = keys[name]
        assert key.public_key.startswith(prefix) and len(key.public_key) == 56
        assert key.seed.startswith("S" + prefix)
        assert key.seed not in repr(key)
        assert nj.NKey.from_seed(key.seed) == key
        assert nj.public_key_kind(key.public_key) is nj.KeyKind(prefix)


def test_signatures_are_plain_ed25519_over_the_public_key(keys):
    user = keys["user"]
    signature = user.sign(b"nonce")
    raw = base64.b32decode(user.public_key + "=" * (-len(user.public_key) % 8))[1:33]
    nacl.signing.VerifyKey(raw).verify(b"nonce", signature)  # raises if wrong
    assert nj.verify_signature(user.public_key, b"nonce", signature)
    assert not nj.verify_signature(user.public_key, b"other", signature)


@pytest.mark.parametrize("bad", ["", "UABC", "not base32!", "X" * 56])
def test_malformed_public_keys_are_refused(bad):
    with pytest.raises(nj.JwtError):
        nj.public_key_kind(bad)


def test_a_public_key_with_a_wrong_checksum_is_refused(keys):
    key = keys["user"].public_key
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(nj.JwtError):
        nj.public_key_kind(tampered)


def test_a_non_seed_is_refused_without_echoing_it():
    with pytest.raises(nj.JwtError) as caught:
        nj.NKey.from_seed("SUNOTASEEDATALL")
    assert "SUNOTASEED" not in str(caught.value)


# --------------------------------------------------------------------------- user JWTs

def test_user_jwt_wire_format(keys):
    token = nj.encode_user(_user_claims(keys), keys["account_signing"], issued_at=1_700_000_000)
    header, claims, signature = _segments(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert claims["iss"] == keys["account_signing"].public_key
    assert claims["sub"] == keys["user"].public_key
    assert claims["iat"] == 1_700_000_000 and claims["name"] == "alice"
    assert claims["nats"] == {
        "pub": {"allow": ["tc.alice.prices", "$JS.API.CONSUMER.INFO.TC_COMMANDS.catchup-alice"]},
        "sub": {"allow": ["tc.alice.commands", "_INBOX_alice.>"], "deny": ["tc.bob.>"]},
        "subs": 20, "data": 1 << 20, "payload": 65536,
        "issuer_account": keys["account"].public_key, "type": "user", "version": 2,
    }
    # jti: unpadded base32 of the SHA-256 of the claims without the jti
    body = {k: v for k, v in claims.items() if k != "jti"}
    digest = hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).digest()
    assert claims["jti"] == base64.b32encode(digest).decode().rstrip("=")
    signing_input = token.rsplit(".", 1)[0].encode()
    assert nj.verify_signature(keys["account_signing"].public_key, signing_input, signature)


def test_user_jwt_round_trip_and_trust(keys):
    claims = _user_claims(keys)
    token = nj.encode_user(claims, keys["account_signing"], issued_at=1_700_000_000)
    account = nj.AccountClaims(subject=keys["account"].public_key, name="MT5FLEET",
                               signing_keys=(keys["account_signing"].public_key,))
    decoded = nj.decode_user(token, trusted_account=account)
    assert decoded.claims == claims
    assert decoded.issuer == keys["account_signing"].public_key and decoded.issued_at == 1_700_000_000
    stranger = nj.AccountClaims(subject=keys["account"].public_key, name="MT5FLEET")
    with pytest.raises(nj.JwtError, match="signing keys"):
        nj.decode_user(token, trusted_account=stranger)


def test_signed_by_the_account_itself_there_is_no_issuer_account(keys):
    token = nj.encode_user(_user_claims(keys), keys["account"])
    assert "issuer_account" not in _segments(token)[1]["nats"]
    assert nj.decode_user(token).claims.issuer_account == keys["account"].public_key


def test_unlimited_limits_are_written_as_minus_one(keys):
    token = nj.encode_user(_user_claims(keys, limits=nj.NatsLimits(), permissions=nj.UserPermissions()),
                           keys["account"])
    nats = _segments(token)[1]["nats"]
    assert (nats["subs"], nats["data"], nats["payload"]) == (-1, -1, -1)
    assert "pub" not in nats and "sub" not in nats  # no permissions: everything allowed


def test_a_user_jwt_is_signed_by_an_account_key_only(keys):
    with pytest.raises(nj.JwtError, match="account key"):
        nj.encode_user(_user_claims(keys), keys["operator"])
    with pytest.raises(nj.JwtError, match="user subject"):
        nj.encode_user(_user_claims(keys, subject=keys["account"].public_key), keys["account"])


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampering_with_any_segment_is_detected(keys, part):
    token = nj.encode_user(_user_claims(keys), keys["account_signing"])
    segments = token.split(".")
    if part == 1:  # a wider permission, re-encoded but not re-signed
        header, claims, _ = _segments(token)
        claims["nats"]["sub"]["allow"].append("tc.bob.commands")
        segments[1] = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    else:
        raw = bytearray(base64.urlsafe_b64decode(segments[part] + "=" * (-len(segments[part]) % 4)))
        raw[len(raw) // 2] ^= 0x01
        segments[part] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(nj.JwtError):
        nj.decode_user(".".join(segments))


def test_a_token_of_another_kind_is_refused(keys):
    account = nj.encode_account(nj.AccountClaims(subject=keys["account"].public_key, name="A"), keys["operator"])
    with pytest.raises(nj.JwtError, match="expected a user JWT"):
        nj.decode_user(account)


@given(st.lists(st.from_regex(r"[a-z$_][a-zA-Z0-9_\-]{0,10}(\.[a-zA-Z0-9_\-*]{1,10}){0,4}(\.>)?", fullmatch=True),
                max_size=8))
def test_any_subject_list_survives_the_round_trip(subject_list):
    account, user = nj.NKey.create(nj.KeyKind.ACCOUNT), nj.NKey.create(nj.KeyKind.USER)
    claims = nj.UserClaims(subject=user.public_key, name="u", issuer_account=account.public_key,
                           permissions=nj.UserPermissions(pub=nj.Permission(allow=tuple(subject_list))))
    assert nj.decode_user(nj.encode_user(claims, account)).claims == claims


# --------------------------------------------------------------------------- account JWTs

def test_account_jwt_flattens_limits_and_carries_revocations(keys):
    revoked = nj.NKey.create(nj.KeyKind.USER).public_key
    claims = nj.AccountClaims(
        subject=keys["account"].public_key, name="MT5FLEET", signing_keys=(keys["account_signing"].public_key,),
        limits=nj.AccountLimits(jetstream=nj.JetStreamLimits.unlimited()), revocations={revoked: 1_700_000_100})
    token = nj.encode_account(claims, keys["operator_signing"], issued_at=1_700_000_200)
    nats = _segments(token)[1]["nats"]
    assert nats["limits"] == {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                              "wildcards": True, "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1,
                              "streams": -1, "consumer": -1}
    assert nats["signing_keys"] == [keys["account_signing"].public_key]
    assert nats["revocations"] == {revoked: 1_700_000_100}
    assert nats["type"] == "account" and nats["version"] == 2
    operator = nj.OperatorClaims(subject=keys["operator"].public_key, name="op",
                                 signing_keys=(keys["operator_signing"].public_key,))
    decoded = nj.decode_account(token, trusted_operator=operator)
    assert decoded.claims == claims and decoded.claims.limits.jetstream.enabled
    with pytest.raises(nj.JwtError, match="trusted operator"):
        nj.decode_account(token, trusted_operator=nj.OperatorClaims(subject=keys["operator"].public_key, name="op"))


def test_an_account_without_jetstream_leaves_it_out(keys):
    token = nj.encode_account(nj.AccountClaims(subject=keys["account"].public_key, name="SYS"), keys["operator"])
    limits = _segments(token)[1]["nats"]["limits"]
    assert not {"mem_storage", "disk_storage", "streams", "consumer"} & set(limits)
    assert not nj.decode_account(token).claims.limits.jetstream.enabled


def test_revocations_keep_the_latest_time_and_follow_the_server_rule(keys):
    user = nj.NKey.create(nj.KeyKind.USER).public_key
    claims = nj.AccountClaims(subject=keys["account"].public_key, name="A")
    revoked = claims.with_revocation(user, 200).with_revocation(user, 100)
    assert dict(revoked.revocations) == {user: 200} and dict(claims.revocations) == {}
    assert revoked.is_revoked(user, issued_at=200) and not revoked.is_revoked(user, issued_at=201)
    everyone = claims.with_revocation("*", 300)
    assert everyone.is_revoked(user, 299) and not everyone.is_revoked(user, 301)
    with pytest.raises(TypeError):
        revoked.revocations[user] = 0  # read-only: claims change only through with_revocation
    with pytest.raises(nj.JwtError):
        claims.with_revocation(keys["account"].public_key, 1)


def test_an_account_jwt_is_signed_by_an_operator_key_only(keys):
    with pytest.raises(nj.JwtError, match="operator key"):
        nj.encode_account(nj.AccountClaims(subject=keys["account"].public_key, name="A"), keys["account"])


# --------------------------------------------------------------------------- operator JWTs

def test_operator_jwt_is_self_signed(keys):
    claims = nj.OperatorClaims(subject=keys["operator"].public_key, name="mt5fleet",
                               signing_keys=(keys["operator_signing"].public_key,),
                               system_account=keys["account"].public_key, strict_signing_key_usage=True)
    token = nj.encode_operator(claims, keys["operator"], issued_at=1_700_000_000)
    raw = _segments(token)[1]
    assert raw["iss"] == raw["sub"] == keys["operator"].public_key
    assert raw["nats"] == {"signing_keys": [keys["operator_signing"].public_key],
                           "system_account": keys["account"].public_key, "strict_signing_key_usage": True,
                           "type": "operator", "version": 2}
    assert nj.decode_operator(token).claims == claims
    with pytest.raises(nj.JwtError, match="own key"):
        nj.encode_operator(claims, keys["operator_signing"])


# --------------------------------------------------------------------------- creds files

def test_creds_text_is_exactly_what_nats_tools_write(keys):
    token = nj.encode_user(_user_claims(keys), keys["account_signing"])
    text = nj.format_creds(token, keys["user"].seed)
    assert text == (
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{keys['user'].seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n")
    assert nj.parse_creds(text) == (token, keys["user"].seed)
    assert nj.parse_creds(text.replace("\n", "\r\n")) == (token, keys["user"].seed)


def test_only_user_seeds_go_into_creds(keys):
    with pytest.raises(nj.JwtError):
        nj.format_creds("a.b.c", keys["account"].seed)
    with pytest.raises(nj.JwtError):
        nj.parse_creds("just some text")
