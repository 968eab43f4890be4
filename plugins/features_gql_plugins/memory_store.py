"""The ``memory`` store: everything in dictionaries, gone when the process exits.

For tests, demos and as the reference implementation of the store protocol.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime

from features_gql import hookimpl
from features_gql.domain import (
    Assignment,
    ChangeEvent,
    ChangeOp,
    Resource,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import ChangesTrimmed
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry


class MemoryStore(Store):
    """Dict-backed store. Every method finishes without awaiting, so each is atomic."""

    name = "memory"
    shared_between_processes = False
    never_suspends = True

    def __init__(self) -> None:
        self._features: dict[Resource, set[str]] = {}
        self._holders: dict[str, set[Resource]] = {}
        #: The change log from revision ``_trimmed + 1`` on (earlier ones were trimmed).
        self._changes: list[ChangeEvent] = []
        self._trimmed = 0
        #: Every assignment in snapshot order, built when a snapshot asks for it and
        #: kept until the next change (the revision it was built at).
        self._ordered: tuple[int, list[Assignment]] | None = None

    async def has(self, resource: Resource, feature: str) -> bool:
        features = self._features.get(resource)
        return features is not None and feature in features

    @property
    def _revision(self) -> int:
        return self._trimmed + len(self._changes)

    def _record(self, op: ChangeOp, resource: Resource, feature: str, actor: str | None) -> int:
        revision = self._revision + 1
        self._changes.append(ChangeEvent(revision, op, resource, feature, datetime.now(UTC), actor))
        return revision

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        features = self._features.setdefault(resource, set())
        if feature in features:
            return WriteResult(False, self._revision)
        features.add(feature)
        self._holders.setdefault(feature, set()).add(resource)
        return WriteResult(True, self._record("add", resource, feature, actor))

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        features = self._features.get(resource)
        if features is None or feature not in features:
            return WriteResult(False, self._revision)
        features.discard(feature)
        if not features:
            del self._features[resource]
        holders = self._holders[feature]
        holders.discard(resource)
        if not holders:
            del self._holders[feature]
        return WriteResult(True, self._record("remove", resource, feature, actor))

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        return [sorted(self._features.get(resource, ())) for resource in resources]

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        get = self._features.get
        return [feature in get(resource, ()) for resource, feature in items]

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        holders = self._holders.get(feature, ())
        selected = sorted(
            r for r in holders if (type is None or r.type == type) and (after is None or r > after)
        )
        return selected[:limit]

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        if revision < self._trimmed:
            raise ChangesTrimmed(revision, self._trimmed + 1)
        # Revisions are dense: revision N sits at index N - 1 - _trimmed.
        start = revision - self._trimmed
        return self._changes[start : start + limit]

    async def revision(self) -> int:
        return self._revision

    # -- snapshots and feed -------------------------------------------------------------

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        revision = self._revision
        if self._ordered is None or self._ordered[0] != revision:
            ordered = sorted(
                Assignment(r.type, r.id, f)
                for r, features in self._features.items()
                for f in features
            )
            self._ordered = (revision, ordered)
        ordered = self._ordered[1]
        start = 0 if after is None else bisect.bisect_right(ordered, after)
        return SnapshotPage(revision, ordered[start : start + limit])

    async def trim_changes(self, through: int) -> int:
        # The latest event always stays, so a reader can tell a trimmed log from an empty one.
        through = min(through, self._revision - 1)
        if through <= self._trimmed:
            return 0
        removed = through - self._trimmed
        del self._changes[:removed]
        self._trimmed = through
        return removed


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    return MemoryStore()


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "memory",
        _factory,
        description="In-process dictionaries; fast, and empty again after a restart.",
    )
