"""Cluster mode with leader election: kopf runs only while this replica holds the Lease.

Why not kopf's peering: peering is presence, not election. Replicas of the same priority
each see the other and pause *all* operators ("Pausing all operators, including self"), so
two replicas reconcile nothing (issue 13). Why not gating each handler on a flag: kopf would
still watch, patch its progress annotations and run timers in every replica, and a handler
skipped on a follower counts as handled. So the follower does not run kopf at all: it only
reads the Lease every ``renew_every_s`` (and serves /metrics and the probes, started by the
caller before the election: ``runtime.run_cluster``). The leader runs ``kopf.operator`` with a
``stop_flag`` the elector sets when leadership is lost; the process then exits (non-zero,
so the pod restarts as a follower), as client-go's leader election does: a replica never
carries state from one term into the next. On SIGTERM the leader stops kopf (kopf's own
signal handling), then clears the Lease's holder so another replica takes over at once
instead of after the Lease duration.

A leader cut off from the API server stops within ``renew_deadline_s``; another replica can
take over only after ``lease_duration_s`` without a change: so two never reconcile at once
(as long as the clocks run at the same rate, not the same time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mt5fleet.operator.adapters.kube_config import KubeAccess
from mt5fleet.operator.adapters.lease import LeaseElector
from mt5fleet.operator.core.leadership import LeaseTiming
from mt5fleet.proto.runtime.tasks import stop_on_signals

log = logging.getLogger("mt5fleet.operator")

LOST_LEADERSHIP_EXIT = 3


def default_identity() -> str:
    """The pod's name (its hostname) and a per-process suffix: a restarted container is a
    new candidate, not the old holder."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Election:
    lease_name: str = "mt5fleet-operator"
    identity: str = field(default_factory=default_identity)
    timing: LeaseTiming = LeaseTiming()


async def run(registry: Any, memo: Any, namespace: str, access: KubeAccess, election: Election | None,
              leading: Callable[[bool], None] = lambda _: None) -> int:
    """The process's exit code: 0 after a signal, LOST_LEADERSHIP_EXIT after losing the Lease.
    ``leading`` is told when this replica starts and stops reconciling (the leader gauge)."""
    import kopf

    leading(False)
    if election is None:  # one replica by construction (tests, a single VM)
        leading(True)
        try:
            await kopf.operator(registry=registry, memo=memo, namespaces=[namespace], standalone=True)
        finally:
            leading(False)
        return 0
    import kubernetes

    coordination = kubernetes.client.CoordinationV1Api(access.api_client())
    elector = LeaseElector(coordination, namespace, election.lease_name, election.identity, election.timing)
    signalled = stop_on_signals()
    log.info("candidate %s for Lease %s/%s (%s)", election.identity, namespace, election.lease_name, access.source)
    if not await elector.acquire(signalled):
        return 0
    stop_kopf = asyncio.Event()
    keeper = asyncio.create_task(_keep(elector, signalled, stop_kopf))
    leading(True)
    try:
        # kopf installs its own SIGINT/SIGTERM handlers now: a signal stops it gracefully.
        await kopf.operator(registry=registry, memo=memo, namespaces=[namespace], standalone=True,
                            stop_flag=stop_kopf)
    finally:
        leading(False)
        lost = keeper.done() and keeper.result()
        keeper.cancel()
    if lost:
        log.error("leadership lost: exiting so that this replica starts again as a follower")
        return LOST_LEADERSHIP_EXIT
    await elector.release()
    return 0


async def _keep(elector: LeaseElector, signalled: asyncio.Event, stop_kopf: asyncio.Event) -> bool:
    """Renews until a signal (False) or lost leadership (True); either way kopf stops."""
    await elector.keep(signalled)
    lost = not signalled.is_set()
    stop_kopf.set()
    return lost
