"""NKeys: the Ed25519 key pairs of operators, accounts and users, and the checks every
token makes on the keys it names. Seeds never appear in a ``repr``."""

from __future__ import annotations

import base64
import binascii
import enum
import os
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing
import nkeys


class JwtError(ValueError):
    """A token that is malformed, wrongly signed or of the wrong kind."""


# --------------------------------------------------------------------------- keys

class KeyKind(enum.StrEnum):
    """The first letter of a public NKey names its role."""

    OPERATOR = "O"
    ACCOUNT = "A"
    USER = "U"

    @property
    def prefix_byte(self) -> int:
        return {KeyKind.OPERATOR: nkeys.PREFIX_BYTE_OPERATOR, KeyKind.ACCOUNT: nkeys.PREFIX_BYTE_ACCOUNT,
                KeyKind.USER: nkeys.PREFIX_BYTE_USER}[self]


@dataclass(frozen=True)
class NKey:
    """An Ed25519 NKey pair. The seed is the secret: it is left out of ``repr``."""

    seed: str = field(repr=False)
    public_key: str
    kind: KeyKind

    @classmethod
    def create(cls, kind: KeyKind) -> NKey:
        return cls.from_seed(nkeys.encode_seed(os.urandom(32), kind.prefix_byte).decode())

    @classmethod
    def from_seed(cls, seed: str) -> NKey:
        try:
            pair = nkeys.from_seed(seed.strip().encode())
            public_key = pair.public_key.decode()
        except (nkeys.NkeysError, binascii.Error, ValueError) as exc:
            raise JwtError(f"not an NKey seed: {type(exc).__name__}") from None
        try:
            kind = KeyKind(public_key[0])
        except ValueError:
            raise JwtError(f"seed of an unsupported NKey role {public_key[0]!r}") from None
        return cls(seed.strip(), public_key, kind)

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed.encode()).sign(data)


def public_key_kind(public_key: str) -> KeyKind:
    """The role of a public NKey, after checking its encoding and CRC-16."""
    raw = _public_key_bytes(public_key)
    try:
        kind = KeyKind(public_key[0])
    except ValueError:
        raise JwtError(f"{public_key!r} is not an operator, account or user key") from None
    if raw[0] != kind.prefix_byte:
        raise JwtError(f"{public_key!r} has an inconsistent prefix")
    return kind


def verify_signature(public_key: str, data: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(_public_key_bytes(public_key)[1:33]).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def _public_key_bytes(public_key: str) -> bytes:
    """prefix byte + 32 key bytes, the trailing little-endian CRC-16 checked."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError):
        raise JwtError(f"{public_key!r} is not base32") from None
    if len(raw) != 35 or int.from_bytes(raw[33:], "little") != nkeys.crc16(bytearray(raw[:33])):
        raise JwtError(f"{public_key!r} is not a public NKey (length or checksum)")
    return raw


def require_kind(public_key: str, kind: KeyKind, what: str) -> None:
    if public_key_kind(public_key) is not kind:
        raise JwtError(f"{what} must be a {kind.name.lower()} key, got {public_key[:1]}...")


def require_signer(signer: NKey, kind: KeyKind, claim: str) -> None:
    if signer.kind is not kind:
        raise JwtError(f"a {claim} JWT is signed by a {kind.name.lower()} key, not a {signer.kind.name.lower()} key")

