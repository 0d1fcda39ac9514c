"""The MT5 password at rest: sealed with AES-256-GCM under the agent's key.

The key is 32 random bytes, base64 in a file or an environment variable, never in the
config file beside the ciphertext. The associated data binds the login and the trade
server, so a ciphertext copied into another account's config (or ClientConfig) does not
open. The operator seals with the same ``seal()`` for ``ClientConfig.mt5_credentials``.

Nothing here prints secret material: ``Secret`` and ``AgentKey`` mask their repr, and every
error names where a key came from, never its bytes. ``mt5fleet agent keygen`` and
``mt5fleet agent seal-password`` (``mt5fleet.client.app.keys``) generate a key and seal a
password for ``agent.toml``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mt5fleet.proto.domain.config import SealedCredentials
from mt5fleet.proto.v1 import config_pb2

ALGORITHM = "AES-256-GCM"
KEY_ENV_VAR = "MT5FLEET_AGENT_KEY"
TEXT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD_PREFIX = b"mt5fleet/v1/mt5-password"


class CredentialError(ValueError):
    """A key or sealed password that cannot be used; the message says why, never the secret."""


class Secret:
    """A plain-text secret that prints as ``***``: only ``reveal()`` gives the text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __reduce__(self) -> NoReturn:
        # Pickling would write the plain text to wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


class AgentKey:
    """The agent's 256-bit key. ``key_id`` names it in sealed data, so rotation can tell keys apart."""

    __slots__ = ("_material", "key_id", "source")

    def __init__(self, material: bytes, source: str = "memory") -> None:
        if len(material) != KEY_BYTES:
            raise CredentialError(f"{source}: the key is {len(material)} bytes, AES-256 needs {KEY_BYTES}")
        self._material = material
        self.key_id = hashlib.sha256(material).hexdigest()[:8]
        self.source = source

    def aead(self) -> AESGCM:
        return AESGCM(self._material)

    def __repr__(self) -> str:
        return f"AgentKey(key_id={self.key_id!r}, source={self.source!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an AgentKey cannot be pickled")


@dataclass(frozen=True)
class SealedPassword:
    """Nonce and ciphertext (with the GCM tag) of one password; repr shows only the key id."""

    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    key_id: str
    algorithm: str = ALGORITHM


def generate_key() -> str:
    """A new key, base64: put it in the key file or ``MT5FLEET_AGENT_KEY``."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def load_key(key_file: str | os.PathLike[str] | None = None, env_var: str = KEY_ENV_VAR) -> AgentKey:
    """The key from ``key_file`` if given, else from the environment variable ``env_var``."""
    if key_file is not None:
        source = f"key file {os.fspath(key_file)}"
        text = _read_key_file(Path(key_file), source)
    else:
        source = f"environment variable {env_var}"
        if not os.environ.get(env_var):
            raise CredentialError(f"no agent key: {env_var} is not set and no mt5.key_file is configured")
        text = os.environ[env_var]
    return AgentKey(_decode_key(text, source), source)


def _read_key_file(path: Path, source: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{source}: not found") from None
    except OSError as exc:
        raise CredentialError(f"{source}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    # Windows PowerShell's `>` writes UTF-16 with a byte-order mark; Notepad may add a UTF-8 one.
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise CredentialError(f"{source}: not text (expected a base64 key)") from None


def _decode_key(text: str, source: str) -> bytes:
    text = text.strip()
    if not text:
        raise CredentialError(f"{source}: empty, expected a base64 key ({KEY_BYTES} random bytes)")
    try:
        # `from None` everywhere: a chained decoder error could quote the input.
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError(f"{source}: not valid base64 (generate a key with generate_key())") from None


def _associated_data(login: int, server: str) -> bytes:
    if isinstance(login, bool) or not isinstance(login, int) or login <= 0:
        raise CredentialError(f"login must be a positive integer, got {login!r}")
    if not server:
        raise CredentialError("server must be the MT5 trade server name, got an empty string")
    return b"\x1f".join((_AAD_PREFIX, str(login).encode(), server.encode("utf-8")))


def seal(password: str | Secret, key: AgentKey, *, login: int, server: str) -> SealedPassword:
    """Encrypt ``password`` for this login on this server, with a fresh random nonce."""
    plain = password.reveal() if isinstance(password, Secret) else password
    if not plain:
        raise CredentialError("refusing to seal an empty password")
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = key.aead().encrypt(nonce, plain.encode("utf-8"), _associated_data(login, server))
    return SealedPassword(nonce=nonce, ciphertext=ciphertext, key_id=key.key_id)


def unseal(sealed: SealedPassword, key: AgentKey, *, login: int, server: str) -> Secret:
    """The password, or CredentialError for a wrong key, tampered data or another account."""
    if sealed.algorithm != ALGORITHM:
        raise CredentialError(f"sealed with {sealed.algorithm!r}, only {ALGORITHM} is supported")
    if sealed.key_id != key.key_id:
        raise CredentialError(
            f"the password was sealed with key {sealed.key_id}, but the agent key ({key.source}) is "
            f"{key.key_id}: use the key it was sealed with, or seal the password again"
        )
    if len(sealed.nonce) != NONCE_BYTES or len(sealed.ciphertext) <= _TAG_BYTES:
        raise CredentialError("the sealed password is malformed (nonce or ciphertext has the wrong length)")
    try:
        plain = key.aead().decrypt(sealed.nonce, sealed.ciphertext, _associated_data(login, server))
    except InvalidTag:
        raise CredentialError(
            f"cannot unseal the MT5 password for login {login} on {server!r}: it was tampered with, "
            "or sealed for another login or server"
        ) from None
    return Secret(plain.decode("utf-8"))


# ------------------------------------------------------------------ wire and text forms

def to_proto(sealed: SealedPassword, *, login: int, server: str) -> config_pb2.EncryptedCredentials:
    return config_pb2.EncryptedCredentials(
        login=login, server=server, nonce=sealed.nonce, ciphertext=sealed.ciphertext,
        key_id=sealed.key_id, algorithm=sealed.algorithm,
    )


def from_proto(message: config_pb2.EncryptedCredentials) -> SealedPassword:
    """The sealed password of a ClientConfig; unseal it with ``message.login`` and ``message.server``."""
    if not message.ciphertext:
        raise CredentialError("the EncryptedCredentials carry no ciphertext")
    # proto3 leaves an unset string empty: an old producer means the only algorithm there is.
    return SealedPassword(
        nonce=bytes(message.nonce), ciphertext=bytes(message.ciphertext),
        key_id=message.key_id, algorithm=message.algorithm or ALGORITHM,
    )


def from_credentials(credentials: SealedCredentials) -> SealedPassword:
    """The sealed password of a checked ClientConfig (``mt5fleet.proto.domain.config``);
    unseal it with ``credentials.login`` and ``credentials.server``."""
    if not credentials.ciphertext:
        raise CredentialError("the sealed credentials carry no ciphertext")
    return SealedPassword(nonce=credentials.nonce, ciphertext=credentials.ciphertext, key_id=credentials.key_id,
                          algorithm=credentials.algorithm or ALGORITHM)


def to_text(sealed: SealedPassword) -> str:
    """``v1:<key_id>:<base64 nonce>:<base64 ciphertext>``, for a TOML string."""
    nonce = base64.b64encode(sealed.nonce).decode("ascii")
    ciphertext = base64.b64encode(sealed.ciphertext).decode("ascii")
    return f"{TEXT_VERSION}:{sealed.key_id}:{nonce}:{ciphertext}"


def from_text(text: str) -> SealedPassword:
    """Parse ``to_text()``'s form. Errors never quote the text: it may be a pasted plain password."""
    parts = text.strip().split(":") if isinstance(text, str) else []
    if len(parts) != 4 or parts[0] != TEXT_VERSION:
        raise CredentialError(
            f"not a sealed password (expected '{TEXT_VERSION}:<key_id>:<nonce>:<ciphertext>'; "
            "seal one with: mt5fleet agent seal-password)"
        )
    _, key_id, nonce_b64, ciphertext_b64 = parts
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
        ciphertext = base64.b64decode(ciphertext_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError("sealed password: nonce or ciphertext is not valid base64") from None
    if len(nonce) != NONCE_BYTES or len(ciphertext) <= _TAG_BYTES:
        raise CredentialError("sealed password: nonce or ciphertext has the wrong length")
    return SealedPassword(nonce=nonce, ciphertext=ciphertext, key_id=key_id)
