"""Local mode: TradingClient YAML files in a folder, reconciled through the same core and
appliers as in a cluster (``mt5fleet operator --local DIR --nats URL``).

The folder is polled (portable, and a second is quick enough for a person editing a
file). ``Secret`` documents in it stand in for the cluster's Secrets (MT5 passwords).
Each resource's status is written beside its file as ``<file>.status.yaml``; a resource
that disappears from the folder is finalized (its user's NATS resources, config and
credentials removed), as a delete with a finalizer would in a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mt5fleet.operator.adapters.secret_store import DirectorySecretStore
from mt5fleet.operator.app.service import Reconciler
from mt5fleet.operator.core.admission import parse_resource
from mt5fleet.operator.core.models import SpecError, TradingClientStatus, to_mapping

log = logging.getLogger("mt5fleet.operator.app.local")

STATUS_SUFFIX = ".status.yaml"
# libyaml's parser and emitter where PyYAML has them: the pure-Python ones spend ~15 ms a
# file, which at a thousand files is most of a pass. Same safe subset of YAML either way.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class Tracked:
    """One TradingClient the folder holds, and what the operator last made of it."""
    key: str
    file: Path
    user_id: str
    digest: str
    generation: int
    status: TradingClientStatus = field(default_factory=TradingClientStatus)
    provisioned: bool = False


@dataclass(frozen=True)
class Document:
    file: Path
    body: dict[str, Any]

    @property
    def key(self) -> str:
        meta = self.body.get("metadata") or {}
        return f"{meta.get('namespace') or 'default'}/{meta.get('name', '?')}"


class LocalOperator:
    def __init__(self, folder: str | os.PathLike[str], reconciler: Reconciler, secrets: DirectorySecretStore, *,
                 poll_s: float = 1.0, resync_s: float = 30.0, observe_s: float = 10.0) -> None:
        self.folder = Path(folder)
        self.reconciler, self.secrets = reconciler, secrets
        self.poll_s, self.resync_s, self.observe_s = poll_s, resync_s, observe_s
        self.tracked: dict[str, Tracked] = {}
        self._fingerprint: tuple = ()
        self._written: dict[Path, tuple] = {}   # source file -> the statuses its status file shows

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_resync = next_observe = loop.time()
        while not stop.is_set():
            now = loop.time()
            resync = now >= next_resync
            await self.scan(force=resync)
            if resync:
                next_resync = now + self.resync_s
            elif now >= next_observe:
                await self.observe()
                next_observe = now + self.observe_s
            try:
                await asyncio.wait_for(stop.wait(), self.poll_s)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ one pass
    async def scan(self, *, force: bool = False) -> int:
        """Reconcile what changed (everything with ``force``: drift repair); returns how
        many resources were reconciled."""
        fingerprint = self._folder_fingerprint()
        if fingerprint == self._fingerprint and not force:
            return 0
        self._fingerprint = fingerprint
        documents = list(self._documents())
        self._load_secrets(documents)
        clients = [d for d in documents if d.body.get("kind") == "TradingClient"]
        streams_checked = await self._ensure_streams()
        done = 0
        seen_users: dict[str, str] = {}
        for document in clients:
            done += await self._one(document, seen_users, force, streams_checked)
        for key in set(self.tracked) - {d.key for d in clients}:
            await self._remove(self.tracked.pop(key))
        await self.reconciler.resize_pool()
        self._write_statuses()
        return done

    async def _ensure_streams(self) -> bool:
        """The shared streams, checked and repaired once for the pass instead of once per
        user; if that fails, each user's reconcile tries and reports it in its status."""
        try:
            applied = await self.reconciler.ensure_streams()
        except Exception as exc:
            log.warning("checking the shared streams failed: %s", exc)
            return False
        if applied is not None and applied.changed:
            log.info("repaired: %s", applied)
        return True

    async def observe(self) -> None:
        """The timer's cheap pass: heartbeats into AgentConnected."""
        changed = False
        for tracked in self.tracked.values():
            if not tracked.provisioned:
                continue
            status = await self.reconciler.observe(tracked.user_id, tracked.status)
            changed |= status != tracked.status
            tracked.status = status
        if changed:
            self._write_statuses()

    async def _one(self, document: Document, seen_users: dict[str, str], force: bool, streams_checked: bool) -> int:
        # Annotations (a key rotation request) reconcile too, but like the API server only a
        # spec change is a new generation.
        spec = _digest(document.body.get("spec"))
        digest = f"{spec}:{_digest(document.body.get('metadata', {}).get('annotations'))}"
        tracked = self.tracked.get(document.key)
        if tracked and tracked.digest == digest and not force:
            seen_users[tracked.user_id] = document.key
            return 0
        generation = (tracked.generation + (not tracked.digest.startswith(spec))) if tracked \
            else _generation(document.body)
        try:
            client = parse_resource({**document.body, "metadata": {**document.body.get("metadata", {}),
                                                                     "generation": generation}})
            owner = seen_users.get(client.spec.user_id)
            if owner and owner != document.key:
                raise SpecError([f"spec.userId: {client.spec.user_id!r} is already used by {owner}"])
        except SpecError as exc:
            previous = tracked.status if tracked else TradingClientStatus()
            status = self.reconciler.invalid(document.key, generation, exc.problems, previous)
            log.warning("%s in %s refused: %s", document.key, document.file.name, exc)
            # What was provisioned stays (and is still finalized if the file goes).
            self.tracked[document.key] = (
                dataclasses.replace(tracked, file=document.file, digest=digest, generation=generation, status=status)
                if tracked else Tracked(document.key, document.file, "", digest, generation, status))
            return 1
        seen_users[client.spec.user_id] = document.key
        if tracked and tracked.provisioned and tracked.user_id != client.spec.user_id:
            await self._remove(tracked)  # a changed userId is a new user: the old one goes
        result = await self.reconciler.reconcile(client, tracked.status if tracked else TradingClientStatus(),
                                                 streams_checked=streams_checked)
        for applied in result.changes:
            log.info("%s: %s", document.key, applied)
        self.tracked[document.key] = Tracked(document.key, document.file, client.spec.user_id, digest, generation,
                                             result.status, provisioned=True)
        return 1

    async def _remove(self, tracked: Tracked) -> None:
        if tracked.provisioned:
            for applied in await self.reconciler.finalize(tracked.key, tracked.user_id):
                log.info("%s deleted: %s", tracked.key, applied)
        else:
            self.reconciler.fleet.forget(tracked.key)

    # ------------------------------------------------------------------ files
    def _folder_fingerprint(self) -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self._yaml_files()))

    def _yaml_files(self) -> Iterator[Path]:
        for path in self.folder.glob("*.y*ml"):
            if path.suffix in (".yaml", ".yml") and not path.name.endswith(STATUS_SUFFIX):
                yield path

    def _documents(self) -> Iterator[Document]:
        for path in sorted(self._yaml_files()):
            try:
                for body in yaml.load_all(path.read_text(), Loader=SAFE_LOADER):
                    if isinstance(body, dict):
                        yield Document(path, body)
            except (OSError, yaml.YAMLError) as exc:  # one bad file costs only itself
                log.warning("skipped %s: %s", path.name, exc)

    def _load_secrets(self, documents: list[Document]) -> None:
        for document in documents:
            if document.body.get("kind") != "Secret":
                continue
            name = (document.body.get("metadata") or {}).get("name")
            data = {k: str(v).encode() for k, v in (document.body.get("stringData") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (document.body.get("data") or {}).items()})
            if name:
                self.secrets.provide(name, data)

    def _write_statuses(self) -> None:
        by_file: dict[Path, list[Tracked]] = {}
        for tracked in self.tracked.values():
            by_file.setdefault(tracked.file, []).append(tracked)
        for file, items in by_file.items():
            state = tuple((t.key, t.user_id, t.status) for t in items)
            target = file.with_name(file.name + STATUS_SUFFIX)
            if self._written.get(file) == state and target.exists():
                continue  # rendering a thousand unchanged statuses is a large part of a pass at rest
            body = [{"name": t.key, "userId": t.user_id, "status": to_mapping(t.status)} for t in items]
            _write_if_changed(target, yaml.dump(body, Dumper=SAFE_DUMPER, sort_keys=False))
            self._written[file] = state
        for gone in set(self._written) - set(by_file):
            del self._written[gone]
        for status_file in self.folder.glob(f"*{STATUS_SUFFIX}"):
            source = status_file.with_name(status_file.name[: -len(STATUS_SUFFIX)])
            if source not in by_file:
                status_file.unlink(missing_ok=True)


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _generation(body: dict[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 1)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
