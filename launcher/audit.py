"""``mt5fleet audit <signal-id|command-id> [--user U]``: why a user got this command (or
none) for a signal, from the decision record (TC_DECISIONS) beside the execution reports
(TC_EXECUTIONS): the reference vs the adjusted entry, the lot and how it was sized, the
fill and its slippage, or the skip and its reason. Human-readable, or ``--json``.

It reads the platform's streams, so it connects as the platform (the service user's
credentials); ``--demo-run DIR`` instead reopens a finished demo's own store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Reports are searched from a minute before their record was stored (a report never precedes
# its record; a minute covers the clocks of a cluster's servers).
REPORT_CLOCK_SKEW_MS = 60_000


def add_audit(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit", help="why a user got a command (or none) for a signal: decision record and execution report",
        description="Show the decision record(s) of a signal or a command beside the execution report(s).")
    audit.add_argument("id", help="a signal id, or a command id (mf1...)")
    audit.add_argument("--user", help="only this user (a direct read; without it, every user's records are searched)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--server", action="append", metavar="URL", help="NATS URL; repeat for failover")
    audit.add_argument("--creds", help="the platform's NATS credentials (the service user's)")
    audit.add_argument("--tls-ca", help="CA bundle that signed the server certificate")
    audit.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    audit.add_argument("--tls-key", help="client certificate key (mutual TLS)")
    audit.add_argument("--demo-run", type=Path, metavar="DIR",
                       help="the run folder of a finished `mt5fleet demo` (instead of --server)")
    audit.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    if bool(args.server) == bool(args.demo_run):
        raise ValueError("mt5fleet audit needs --server URL (with --creds, --tls-ca as needed) or --demo-run DIR")
    if args.user:
        from mt5fleet.proto.subjects import check_user_id

        check_user_id(args.user)
    # nats-py upgrades to TLS after connecting, and asyncio says so on every close: noise.
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())
    with _connection(args) as settings:
        found = asyncio.run(_audit(settings, args.id, args.user))
    from mt5fleet.launcher.audit_view import render_json, render_text

    print(render_json(args.id, found) if args.json else render_text(found))
    if not found:
        who = f" of user {args.user}" if args.user else ""
        print(f"mt5fleet audit: no decision record{who} for {args.id!r}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[Any]:
    from mt5fleet.proto.runtime.natsconn import NatsSettings

    if args.demo_run:
        from mt5fleet.launcher.demo.services import reopened_demo_nats

        with reopened_demo_nats(args.demo_run) as settings:
            yield settings
        return
    yield NatsSettings(servers=tuple(args.server), name="mt5fleet-audit", creds_file=args.creds,
                       tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                       reconnect=False, max_reconnect_attempts=1)


@dataclass(frozen=True)
class Audited:
    """One decision record as stored, with the execution reports of its commands."""

    record: Any                 # DecisionRecord
    stored_at_ms: int           # when JetStream stored it (the server's clock)
    reports: tuple[Any, ...]    # ExecutionReports, in the order the agent sent them


async def _audit(settings: Any, ident: str, user: str | None) -> list[Audited]:
    from mt5fleet.proto.runtime.natsconn import connect

    client = await connect(settings)
    try:
        js = client.jetstream(timeout=10)
        return [await _with_reports(js, record, stored) async for record, stored in _records(js, ident, user)]
    finally:
        await client.close()


async def _records(js: Any, ident: str, user: str | None) -> AsyncIterator[tuple[Any, int]]:
    """A command id's record (searched in the user's records, or everyone's), or a signal's
    records (one direct read with ``user``)."""
    from mt5fleet.proto import subjects
    from mt5fleet.proto.domain.ids import is_command_id
    from mt5fleet.workers.adapters import decision_store

    if is_command_id(ident):
        where = subjects.decisions_of_user(user) if user else f"{subjects.DECISIONS_PREFIX}.>"
        async for record, stored in decision_store.decisions(js, where):
            if any(command.command_id == ident for command in record.commands):
                yield record, stored
        return
    if user:
        found = await decision_store.find_decision(js, ident, user)
        if found is not None:
            yield found
        return
    async for record, stored in decision_store.decisions(js, subjects.decisions_of_signal(ident)):
        yield record, stored


async def _with_reports(js: Any, record: Any, stored_at_ms: int) -> Audited:
    from mt5fleet.workers.adapters.decision_store import executions_for

    reports = await executions_for(js, record.user_id, [c.command_id for c in record.commands],
                                   since_ms=max(stored_at_ms - REPORT_CLOCK_SKEW_MS, 0))
    return Audited(record, stored_at_ms, tuple(reports))
