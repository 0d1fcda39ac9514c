"""The agent's hand-over bundle: what the operator issued for one user, as the files the
agent reads, with a ready ``agent.toml``. Pure: from the bootstrap Secret's keys
(``user.creds``, ``bootstrap.json``, ``ca.crt``, ``agent.key``) to named file contents.

Nothing secret travels in the clear beyond the NATS credentials: the MT5-password key
(``agent.key``) goes only sealed under a passphrase the platform hands over by another
channel, or not at all (the trader then makes a key of their own: ``agent keygen``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

CREDS = "user.creds"
CA = "ca.crt"
CONFIG = "agent.toml"
SEALED_KEY = "agent.key.sealed"
KEY = "agent.key"
README = "README.txt"
MANIFEST = "bundle.json"
FORMAT = "mt5fleet-agent-bundle/1"


class BundleError(ValueError):
    pass


@dataclass(frozen=True)
class Issued:
    """The bootstrap Secret's content, checked."""

    user_id: str
    nats_urls: tuple[str, ...]
    creds: bytes
    ca: bytes = b""
    agent_key: bytes = b""


def issued_from_secret(data: Mapping[str, bytes], user_id: str) -> Issued:
    if "bootstrap.json" not in data:
        raise BundleError(f"the bootstrap Secret of {user_id!r} has no bootstrap.json: has the operator reconciled it?")
    if not data.get(CREDS):
        raise BundleError(f"the bootstrap Secret of {user_id!r} has no user.creds: the operator issues them once "
                          "the user's NATS account exists, and takes them back when it revokes them (a paused "
                          "TradingClient); see its CredentialsIssued condition")
    boot = json.loads(data["bootstrap.json"])
    if boot.get("user_id") != user_id:
        raise BundleError(f"the bootstrap Secret is for {boot.get('user_id')!r}, not {user_id!r}")
    urls = tuple(boot.get("nats_urls") or ())
    if not urls:
        raise BundleError("bootstrap.json names no NATS URL")
    return Issued(user_id, urls, data[CREDS], data.get(CA, b""), data.get("agent.key", b""))


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def agent_toml(issued: Issued, *, login: int | None = None, server: str = "", with_key: bool = False) -> str:
    lines = [
        "# mt5fleet agent configuration, written by `mt5fleet agent bundle` for this user.",
        "# Paths are relative to this file. Check it with `mt5fleet agent doctor --config agent.toml`.",
        f"user_id = {_toml_string(issued.user_id)}",
        "",
        "[nats]",
        f"servers = [{', '.join(_toml_string(u) for u in issued.nats_urls)}]",
        f"creds_file = {_toml_string(CREDS)}",
    ]
    if issued.ca:
        lines.append(f"tls_ca = {_toml_string(CA)}")
    lines += ["", "[mt5]", 'backend = "metatrader5"']
    unset_login = "# login = 51234567            # default: the terminal's logged-in account"
    lines.append(f"login = {login}" if login else unset_login)
    lines.append(f"server = {_toml_string(server)}" if server else '# server = "Broker-Live"')
    if with_key:
        lines.append(f"key_file = {_toml_string(KEY)}   # opens the MT5 password the platform sealed for you")
    else:
        lines.append('# key_file = "agent.key"      # `mt5fleet agent keygen`, then `agent seal-password`')
    lines += ["", "[risk]                          # your own limits, enforced even if the server is wrong",
              "max_risk_per_trade_pct = 1.0", "max_daily_loss = 0", "max_drawdown = 0.2", "max_open_positions = 5", ""]
    return "\n".join(lines)


def readme(issued: Issued, with_key: bool) -> str:
    key = ("agent.key.sealed: your MT5-password key, sealed; `agent init` asks for the passphrase your platform "
           "sent you separately.\n" if with_key else "")
    return (f"mt5fleet agent bundle for {issued.user_id}\n\n"
            "Unpack with:  mt5fleet agent init THIS-FILE --dir C:\\mt5fleet\n"
            "Then check:   mt5fleet agent doctor --config C:\\mt5fleet\\agent.toml\n\n"
            "user.creds: your NATS credentials. A secret: whoever has it can publish as you.\n"
            f"{'ca.crt: the certificate authority of the platform.' + chr(10) if issued.ca else ''}{key}")


def bundle_files(issued: Issued, *, sealed_key: bytes = b"", login: int | None = None,
                 server: str = "") -> dict[str, bytes]:
    """Every file of the bundle, by name."""
    files = {CREDS: issued.creds, CONFIG: agent_toml(issued, login=login, server=server,
                                                     with_key=bool(sealed_key)).encode(),
             README: readme(issued, bool(sealed_key)).encode(),
             MANIFEST: json.dumps({"format": FORMAT, "user_id": issued.user_id}).encode()}
    if issued.ca:
        files[CA] = issued.ca
    if sealed_key:
        files[SEALED_KEY] = sealed_key
    return files


def check_manifest(files: Mapping[str, bytes]) -> str:
    """The bundle's user id, once it is known to be a bundle of this format."""
    try:
        manifest = json.loads(files[MANIFEST])
    except (KeyError, ValueError) as exc:
        raise BundleError("not an mt5fleet agent bundle (no bundle.json)") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle format {manifest.get('format')!r} is not {FORMAT!r}: use a matching mt5fleet")
    missing = [name for name in (CREDS, CONFIG) if name not in files]
    if missing:
        raise BundleError(f"the bundle lacks {', '.join(missing)}")
    return str(manifest["user_id"])
