"""kopf wiring, kept thin: each handler reads the body, asks the shared ``Reconciler``
(``memo.reconciler``, built at start-up) and writes status and events.

Handlers return nothing: kopf would store a return value in the status, and the status
belongs to the reconcile core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from mt5fleet.operator.app.service import Reconciler
from mt5fleet.operator.core.admission import parse_resource, parse_status
from mt5fleet.operator.core.changes import Applied
from mt5fleet.operator.core.models import GROUP, PLURAL, VERSION, SpecError, to_mapping

log = logging.getLogger("mt5fleet.operator.kopf")

PREFIX = "mt5fleet.io"
FINALIZER = f"{PREFIX}/finalizer"
RESYNC_INTERVAL_S = 60.0

Emit = Callable[[Any, str, str, str], None]   # (body, type, reason, message)


def kopf_event(body: Any, kind: str, reason: str, message: str) -> None:
    (kopf.warn if kind == "Warning" else kopf.info)(body, reason=reason, message=message)


def configure(settings: kopf.OperatorSettings) -> None:
    """Finalizer and progress annotations under our prefix. No kopf peering: of several
    replicas, only the holder of the Lease runs kopf at all (``app/elected.py``)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.peering.standalone = True
    settings.posting.level = logging.INFO


def register(registry: kopf.OperatorRegistry, *, interval_s: float = RESYNC_INTERVAL_S) -> None:
    resource = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry)
    kopf.on.create(**resource)(on_change)
    kopf.on.update(**resource, field="spec")(on_change)
    kopf.on.resume(**resource)(on_change)
    kopf.on.delete(**resource)(on_delete)
    kopf.timer(**resource, interval=interval_s, initial_delay=interval_s / 2)(on_timer)


async def on_change(body: Any, status: Any, patch: Any, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    emit: Emit = getattr(memo, "emit", kopf_event)
    previous = parse_status(dict(status or {}))
    try:
        client = parse_resource(body, rules=False)  # the API server ran the CEL rules
    except SpecError as exc:  # the API server checked the schema; this is a bug or an old object
        meta = body.get("metadata", {})
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        new = reconciler.invalid(key, int(meta.get("generation") or 0), exc.problems, previous)
        patch.status.update(to_mapping(new))
        emit(body, "Warning", "InvalidSpec", str(exc))
        return
    result = await reconciler.reconcile(client, previous)
    if result.status != previous:  # a resume of an unchanged resource writes nothing
        patch.status.update(to_mapping(result.status))
    _emit_changes(emit, body, result.changes)
    failed = next((c for c in result.status.conditions if c.type == "Ready" and c.status != "True"), None)
    if failed is not None and failed.reason != "Reconciled" and result.status.phase != "Paused":
        emit(body, "Warning", failed.reason, failed.message)
    await reconciler.resize_pool()


async def on_delete(body: Any, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    emit: Emit = getattr(memo, "emit", kopf_event)
    meta = body.get("metadata", {})
    user_id = (body.get("spec") or {}).get("userId")
    if user_id:  # a body the schema refused never got anything provisioned under a valid id
        _emit_changes(emit, body, await reconciler.finalize(f"{meta.get('namespace')}/{meta.get('name')}", user_id))
    await reconciler.resize_pool()


async def on_timer(body: Any, status: Any, patch: Any, memo: Any, **_: Any) -> None:
    """Repairs drift (a config entry or stream deleted behind the operator's back comes
    back) and refreshes AgentConnected from the heartbeats."""
    reconciler: Reconciler = memo.reconciler
    previous = parse_status(dict(status or {}))
    try:
        client = parse_resource(body, rules=False)  # the API server ran the CEL rules
    except SpecError:
        return  # on_change has said why
    shared, checked = await _shared_streams(reconciler, getattr(memo, "resync_s", RESYNC_INTERVAL_S))
    result = await reconciler.reconcile(client, previous, streams_checked=checked)
    if result.status != previous:
        patch.status.update(to_mapping(result.status))
    _emit_changes(getattr(memo, "emit", kopf_event), body, shared + result.changes, repaired=True)
    await reconciler.resize_pool()  # a recount at most every POOL_RECOUNT_S, whatever the fleet's size


async def _shared_streams(reconciler: Reconciler, interval_s: float) -> tuple[tuple[Applied, ...], bool]:
    """The streams all users share, checked by whichever timer comes first in each resync
    interval (not by every user's); if that fails, the user's reconcile checks them and its
    status says why."""
    try:
        applied = await reconciler.ensure_streams(unless_within_s=interval_s)
    except Exception as exc:
        log.warning("checking the shared streams failed: %s", exc)
        return (), False
    return ((applied,) if applied is not None else ()), True


def _emit_changes(emit: Emit, body: Any, changes: tuple[Applied, ...] | list[Applied], *,
                  repaired: bool = False) -> None:
    for applied in changes:
        if applied.changed:
            reason = ("Repaired" if repaired else "") + applied.change.value.title()
            emit(body, "Normal", reason, str(applied))
