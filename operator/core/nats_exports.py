"""Cross-account traffic in NATS JWTs: an account's exports and imports, and the activation
token an exporter signs for one importer, as nats-io/jwt v2 names them (``exports.go``,
``imports.go``, ``activation_claims.go``).

Why these exist: accounts are isolated completely, so what one account may see of another
is exactly what the exporter exports *and* the importer imports. With ``token_req`` the
exporter also decides who may import: an import must carry an activation token the
exporting account signed for that importing account and (at most) that subject.

Pure data and their JSON (the JWT's ``nats.exports`` / ``nats.imports`` entries, Go's
``omitempty`` applied); signing and verifying tokens is ``nats_jwt``'s job.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.operator.core.nats_keys import JwtError, KeyKind, require_kind

NANOS_PER_SECOND = 1_000_000_000


class ExportType(enum.StrEnum):
    """``type`` of an export or import, ``kind`` of an activation."""

    STREAM = "stream"    # messages flow exporter -> importer's subscribers
    SERVICE = "service"  # requests flow importer -> exporter, replies back


class ResponseType(enum.StrEnum):
    """How many replies a service export may send to one request (services only)."""

    SINGLETON = "Singleton"
    STREAM = "Stream"
    CHUNKED = "Chunked"


def subject_contained_in(subject: str, container: str) -> bool:
    """jwt's ``Subject.IsContainedIn``: every subject ``subject`` matches, ``container`` matches."""
    mine, theirs = subject.split("."), container.split(".")
    if len(mine) < len(theirs) or (len(mine) > len(theirs) and theirs[-1] != ">"):
        return False
    for index, token in enumerate(theirs):
        if token == ">" and index == len(theirs) - 1:
            return True
        if token not in ("*", mine[index]):
            return False
    return True


def _check_subject(subject: str, what: str) -> None:
    tokens = subject.split(".")
    if not subject or " " in subject or "" in tokens or any(">" in t and t != ">" for t in tokens) \
            or ">" in tokens[:-1]:
        raise JwtError(f"{what} {subject!r} is not a valid NATS subject")


@dataclass(frozen=True)
class Export:
    """One exported subject. ``revocations`` maps an importing account's public key to unix
    seconds: its activation tokens issued at or before then stop working."""

    name: str
    subject: str
    type: ExportType
    token_req: bool = False
    response_type: ResponseType | None = None  # services; None is the server's Singleton
    response_threshold_ns: int = 0  # services: how long the server waits for a reply
    account_token_position: int = 0  # 1-based; that `*` token must be the importer's key
    description: str = ""
    revocations: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", ExportType(self.type))
        if self.response_type is not None:
            object.__setattr__(self, "response_type", ResponseType(self.response_type))
        object.__setattr__(self, "revocations", types.MappingProxyType(dict(self.revocations)))
        _check_subject(self.subject, "export subject")
        if self.type is ExportType.STREAM and (self.response_type or self.response_threshold_ns):
            raise JwtError(f"stream export {self.subject!r}: response type and threshold are for services")
        if self.response_threshold_ns < 0:
            raise JwtError(f"export {self.subject!r}: negative response threshold")
        self._check_token_position()

    def _check_token_position(self) -> None:
        if not self.account_token_position:
            return
        tokens = self.subject.split(".")
        if self.account_token_position > len(tokens) or tokens[self.account_token_position - 1] != "*":
            raise JwtError(f"export {self.subject!r}: account_token_position {self.account_token_position} "
                           "must point at a * token")


@dataclass(frozen=True)
class Import:
    """One imported subject. ``subject`` is the publisher's view: the exporter's subject for
    a stream, the importer's request subject for a service. ``local_subject`` renames it
    inside the importing account; ``to`` is its deprecated predecessor."""

    name: str
    subject: str
    account: str  # the exporting account's public key
    type: ExportType
    token: str = field(default="", repr=False)  # the activation JWT (not secret; long)
    local_subject: str = ""
    to: str = ""
    share: bool = False  # services: share the importer's identity for latency tracking

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", ExportType(self.type))
        require_kind(self.account, KeyKind.ACCOUNT, "import account")
        _check_subject(self.subject, "import subject")
        if self.local_subject and self.to:
            raise JwtError(f"import {self.subject!r}: local_subject replaces to; set one")
        if self.share and self.type is not ExportType.SERVICE:
            raise JwtError(f"import {self.subject!r}: share is only valid for services")

    @property
    def activation_subject(self) -> str:
        """The subject its token must cover (jwt ``Import.Validate``: ``to`` for a service)."""
        return self.to if self.type is ExportType.SERVICE and self.to else self.subject


@dataclass(frozen=True)
class ActivationClaims:
    """An exporter's permission for one importing account (``subject``) to import
    ``import_subject`` of ``kind``. ``issuer_account`` is the exporting account: written
    into the JWT only when one of its signing keys, not the account key, signs it."""

    subject: str
    name: str
    import_subject: str
    kind: ExportType
    issuer_account: str
    expires: int = 0  # unix seconds; 0: never

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ExportType(self.kind))
        require_kind(self.subject, KeyKind.ACCOUNT, "activation subject (the importing account)")
        require_kind(self.issuer_account, KeyKind.ACCOUNT, "activation issuer account")
        _check_subject(self.import_subject, "activation subject")


def check_exports(exports: Iterable[Export]) -> None:
    """jwt ``Exports.Validate``: no export of a type may contain another of the same type."""
    exports = tuple(exports)
    for index, export in enumerate(exports):
        for other in exports[index + 1:]:
            if other.type is export.type and (subject_contained_in(export.subject, other.subject)
                                              or subject_contained_in(other.subject, export.subject)):
                raise JwtError(f"{export.type} exports {export.subject!r} and {other.subject!r} overlap")


def check_imports(imports: Iterable[Import]) -> None:
    """jwt ``Imports.Validate``: service imports from one account must not overlap."""
    services = [i for i in imports if i.type is ExportType.SERVICE]
    for index, one in enumerate(services):
        mine = one.to or one.local_subject or one.subject
        for other in services[index + 1:]:
            theirs = other.to or other.local_subject or other.subject
            if one.account == other.account and (subject_contained_in(mine, theirs)
                                                 or subject_contained_in(theirs, mine)):
                raise JwtError(f"service imports {mine!r} and {theirs!r} from one account overlap")


# --------------------------------------------------------------------------- JSON

def _compact(values: dict[str, Any]) -> dict[str, Any]:
    """Go's ``omitempty``."""
    return {k: v for k, v in values.items() if v not in (0, "", False, None, [], {})}


def export_json(export: Export) -> dict[str, Any]:
    return _compact({
        "name": export.name, "subject": export.subject, "type": export.type.value,
        "token_req": export.token_req, "revocations": dict(sorted(export.revocations.items())),
        "response_type": export.response_type.value if export.response_type else "",
        "response_threshold": export.response_threshold_ns,
        "account_token_position": export.account_token_position, "description": export.description,
    })


def export_from_json(value: Mapping[str, Any]) -> Export:
    try:
        return Export(name=value.get("name", ""), subject=value["subject"], type=ExportType(value["type"]),
                      token_req=bool(value.get("token_req", False)),
                      response_type=ResponseType(value["response_type"]) if value.get("response_type") else None,
                      response_threshold_ns=int(value.get("response_threshold", 0)),
                      account_token_position=int(value.get("account_token_position", 0)),
                      description=value.get("description", ""), revocations=dict(value.get("revocations", {})))
    except (KeyError, ValueError, TypeError) as exc:
        raise JwtError(f"unreadable export {dict(value)!r}: {exc}") from None


def import_json(imported: Import) -> dict[str, Any]:
    return _compact({
        "name": imported.name, "subject": imported.subject, "account": imported.account,
        "token": imported.token, "to": imported.to, "local_subject": imported.local_subject,
        "type": imported.type.value, "share": imported.share,
    })


def import_from_json(value: Mapping[str, Any]) -> Import:
    try:
        return Import(name=value.get("name", ""), subject=value["subject"], account=value["account"],
                      type=ExportType(value["type"]), token=value.get("token", ""),
                      local_subject=value.get("local_subject", ""), to=value.get("to", ""),
                      share=bool(value.get("share", False)))
    except (KeyError, ValueError, TypeError) as exc:
        raise JwtError(f"unreadable import {dict(value)!r}: {exc}") from None


__all__ = [
    "NANOS_PER_SECOND", "ActivationClaims", "Export", "ExportType", "Import", "ResponseType", "check_exports",
    "check_imports", "export_from_json", "export_json", "import_from_json", "import_json",
    "subject_contained_in",
]
