"""The operator's view of its namespace's Secrets, fed by a list and a watch and by its own
writes (pure: the list/watch I/O is ``adapters.secret_informer``).

Why writes go into the view as well: a watch event comes some milliseconds after the
write's response, and a reconcile that creates a Secret reads it back at once (the
bootstrap Secret: created, then its agent key sealed with). So the written object is put
in from the response, and an event older than what the view holds is ignored: the watch
may still deliver the versions before our write, or the object we just deleted.

"Older" compares resourceVersions as integers, which Kubernetes guarantees for objects of
one resource since 1.35 (KEP-5504, etcd revisions before that). A version that is not an
integer (another storage) is never judged older: the watch's order decides, as client-go's
informers do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class CachedSecret:
    name: str
    version: str                                   # metadata.resourceVersion
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)   # decoded values: never logged
    labels: Mapping[str, str] = field(default_factory=dict)


def older(version: str, than: str) -> bool:
    """True only when both are integers and ``version`` is the smaller."""
    try:
        return int(version) < int(than)
    except ValueError:
        return False


def not_after(version: str, deleted: str) -> bool:
    """An object at ``version`` existed before a delete at ``deleted`` (integers only)."""
    return version == deleted or older(version, deleted)


@dataclass
class SecretView:
    """Secrets by name; ``gone`` remembers the version of each one deleted, so that an
    event from before the delete does not bring it back."""

    secrets: dict[str, CachedSecret] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> CachedSecret | None:
        return self.secrets.get(name)

    def put(self, secret: CachedSecret) -> bool:
        """An ADDED or MODIFIED event, or our own write's response. False if stale."""
        known = self.secrets.get(secret.name)
        if known is not None and (known == secret or older(secret.version, known.version)):
            return False
        if known is None and secret.name in self.gone and not_after(secret.version, self.gone[secret.name]):
            return False
        self.secrets[secret.name] = secret
        self.gone.pop(secret.name, None)
        return True

    def remove(self, name: str, version: str) -> bool:
        """A DELETED event (``version``: the deletion's), or our own delete (``version``: the
        last one we knew). False if the view already holds something newer."""
        known = self.secrets.get(name)
        if known is not None and older(version, known.version):
            return False
        self.secrets.pop(name, None)
        if name not in self.gone or older(self.gone[name], version):
            self.gone[name] = version
        return known is not None

    def replace(self, listed: Iterable[CachedSecret], version: str) -> None:
        """A fresh list at ``version`` (at start, after the watch expired): it replaces the
        view, except what we wrote after the list was taken (its event is still to come)."""
        fresh = {secret.name: secret for secret in listed}
        for name, mine in self.secrets.items():
            if older(version, mine.version) and name not in fresh:
                fresh[name] = mine
        for name, deleted in self.gone.items():
            if name in fresh and not_after(fresh[name].version, deleted):
                del fresh[name]
        self.gone = {name: v for name, v in self.gone.items() if older(version, v)}
        self.secrets = fresh

    def snapshot(self) -> Mapping[str, CachedSecret]:
        return MappingProxyType(self.secrets)
