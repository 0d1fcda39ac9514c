"""The platform's approved brokers (the seeds: the account's broker "must be approved").

A broker is approved when its company name is one of ``companies`` (compared without case
and surrounding spaces: MT5 reports ``AccountInfo.company`` as the broker typed it) or its
MT5 trade server matches one of ``servers`` (shell-style patterns, ``ICMarketsSC-*``,
without case). An empty list on both sides approves every broker: a platform that
configured nothing keeps working as before.

Pure: ``approved_brokers_from_mapping`` reads the parsed YAML of ``--brokers`` (Helm's
``approvedBrokers``); the reconcile core asks ``refusal`` and ``mismatch`` for a reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mt5fleet.proto.domain.brokers import account_mismatch
from mt5fleet.proto.domain.brokers import normalised as _norm

MAX_ENTRIES = 1000


@dataclass(frozen=True)
class ApprovedBrokers:
    companies: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()     # fnmatch patterns

    @property
    def restricted(self) -> bool:
        return bool(self.companies or self.servers)

    def approves(self, company: str, server: str) -> bool:
        if not self.restricted:
            return True
        if _norm(company) in {_norm(c) for c in self.companies}:
            return True
        return any(fnmatch.fnmatchcase(_norm(server), _norm(p)) for p in self.servers)

    def refusal(self, company: str, server: str) -> str | None:
        """Why a TradingClient's declared broker is refused, or None."""
        if self.approves(company, server):
            return None
        listed = ", ".join([*self.companies, *(f"server {p}" for p in self.servers)])
        return f"broker {company!r} (server {server!r}) is not an approved broker (approved: {listed})"


ANY_BROKER = ApprovedBrokers()


def mismatch(declared_company: str, declared_server: str, reported_company: str, reported_server: str) -> str | None:
    """Why the account the agent's terminal is logged into is not the one the TradingClient
    declares, naming both brokers, or None (nothing reported yet is no mismatch). The one
    definition the agent checks too: ``mt5fleet.proto.domain.brokers``."""
    return account_mismatch(declared_company, declared_server, reported_company, reported_server)


def approved_brokers_from_mapping(raw: Mapping[str, Any] | None) -> ApprovedBrokers:
    """``{companies: [IC Markets, ...], servers: [ICMarketsSC-*, ...]}``; ValueError naming
    the problem for anything else (a typo must not silently approve every broker)."""
    if raw is None:
        return ANY_BROKER
    if not isinstance(raw, Mapping):
        raise ValueError(f"approved brokers must be a mapping with companies and servers, got {type(raw).__name__}")
    unknown = set(raw) - {"companies", "servers"}
    if unknown:
        raise ValueError(f"approved brokers: unknown key(s) {sorted(unknown)}; allowed: companies, servers")
    return ApprovedBrokers(companies=_names(raw.get("companies"), "companies"),
                           servers=_names(raw.get("servers"), "servers"))


def _names(items: Iterable[Any] | None, what: str) -> tuple[str, ...]:
    if items is None:
        return ()
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValueError(f"approved brokers: {what} must be a list of names")
    names = tuple(items)
    if len(names) > MAX_ENTRIES:
        raise ValueError(f"approved brokers: {what} has {len(names)} entries, at most {MAX_ENTRIES}")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"approved brokers: {what} entry {name!r} is not a non-empty name")
    return tuple(n.strip() for n in names)
