"""``.creds`` files: a user JWT and its NKey seed, in the block format ``nsc`` writes and
the NATS clients read."""

from __future__ import annotations

import re

from mt5fleet.operator.core.nats_keys import JwtError

_CREDS_BLOCK = re.compile(r"\s*(?:(?:-{3,}.*-{3,}\r?\n)([\w\-.=]+)(?:\r?\n-{3,}.*-{3,}(?:\r?\n|\Z)))")


def format_creds(user_jwt: str, seed: str) -> str:
    """The ``.creds`` text exactly as ``nsc`` / nats-io/jwt ``FormatUserConfig`` write it."""
    if not seed.startswith("SU"):
        raise JwtError("a creds file holds a user seed (SU...)")
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )


def parse_creds(text: str) -> tuple[str, str]:
    """(user JWT, seed) from ``.creds`` text, with the regex the Go and Python clients use."""
    blocks = _CREDS_BLOCK.findall(text)
    if len(blocks) < 2:
        raise JwtError("not a creds file: expected a JWT block and a seed block")
    return blocks[0], blocks[1]

