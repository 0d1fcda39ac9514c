"""The agent's key and sealed-password command line (``mt5fleet agent keygen`` and
``mt5fleet agent seal-password``; also ``python -m mt5fleet.client.app.keys``): a new key
file for ``mt5.key_file``, and the sealed text for ``mt5.password`` in ``agent.toml``.
The cryptography is the shared ``mt5fleet.proto.runtime.sealing``; this is its front end."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from mt5fleet.proto.runtime.sealing import (
    KEY_ENV_VAR,
    CredentialError,
    Secret,
    generate_key,
    load_key,
    seal,
    to_text,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate-key":
        return write_key(args.out)
    try:
        key = load_key(args.key_file)
        sealed = seal(_read_password(), key, login=args.login, server=args.server)
    except CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(to_text(sealed))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mt5fleet.client.app.keys",
                                     description="Agent key and sealed MT5 password for agent.toml.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate-key", help="a new base64 key, printed or written to a new file")
    generate.add_argument("--out", help="write it to this file (never overwrites: that would orphan sealed passwords)")
    seal_parser = commands.add_parser("seal", help="read the password (prompt or stdin), print mt5.password")
    seal_parser.add_argument("--login", type=int, required=True)
    seal_parser.add_argument("--server", required=True)
    seal_parser.add_argument("--key-file", help=f"default: the environment variable {KEY_ENV_VAR}")
    return parser


def write_key(out: str | None) -> int:
    """A new key, printed, or written to ``out`` (which must not exist yet)."""
    if out is None:
        print(generate_key())
        return 0
    try:
        # O_EXCL: an existing key is never replaced; 0o600: only this user reads it (POSIX).
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {out} exists; not overwriting a key", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(generate_key() + "\n")
    return 0


def _read_password() -> Secret:
    if sys.stdin.isatty():
        return Secret(getpass.getpass("MT5 password: "))
    return Secret(sys.stdin.readline().rstrip("\r\n"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
