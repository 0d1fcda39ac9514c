"""The bundle on disk: one zip file (Windows opens it too), written 0600; unpacked into a
0700 folder of 0600 files. On Windows the modes do little (NTFS has ACLs): the folder
should sit under the trader's own profile or a folder only they can read.

The optional MT5-password key travels sealed under a passphrase: scrypt derives the key
(slow on purpose: a stolen bundle must not give up a weak passphrase quickly), AES-256-GCM
seals, and the bundle's user id is bound in as associated data."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mt5fleet.client.core.bundle import BundleError

_MAGIC = b"mt5fleet-sealed-key/1\n"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def _derive(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, **_SCRYPT).derive(passphrase.encode())


def seal_key(key: bytes, passphrase: str, user_id: str) -> bytes:
    if len(passphrase) < 12:
        raise BundleError("the passphrase must have at least 12 characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    return _MAGIC + salt + nonce + AESGCM(_derive(passphrase, salt)).encrypt(nonce, key, user_id.encode())


def open_key(sealed: bytes, passphrase: str, user_id: str) -> bytes:
    if not sealed.startswith(_MAGIC):
        raise BundleError("agent.key.sealed is not a sealed key")
    body = sealed[len(_MAGIC):]
    salt, nonce, ciphertext = body[:16], body[16:28], body[28:]
    try:
        return AESGCM(_derive(passphrase, salt)).decrypt(nonce, ciphertext, user_id.encode())
    except InvalidTag as exc:
        raise BundleError("wrong passphrase for agent.key.sealed (or the file was altered)") from exc


def write_bundle(path: Path, files: Mapping[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(buffer.getvalue())
    os.chmod(path, 0o600)


def read_bundle(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()
                    if "/" not in info.filename and "\\" not in info.filename and not info.filename.startswith(".")}
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path} is not an mt5fleet agent bundle (not a zip file)") from exc


def unpack(files: Mapping[str, bytes], folder: Path, *, force: bool = False) -> list[Path]:
    """The files into ``folder`` (0700), each 0600; an existing file is kept unless ``force``."""
    clashes = [name for name in files if (folder / name).exists()]
    if clashes and not force:
        raise BundleError(f"{folder} already has {', '.join(sorted(clashes))}: use --force to replace them")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    written = []
    for name, body in sorted(files.items()):
        target = folder / name
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(body)
        os.chmod(target, 0o600)
        written.append(target)
    return written
