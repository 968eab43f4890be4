"""The ``memory`` store: everything in dictionaries, gone when the process exits.

For tests, demos and as the reference implementation of the store protocol.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from features_gql import hookimpl
from features_gql.domain import (
    Assignment,
    BulkResult,
    ChangeEvent,
    ChangeOp,
    DefinitionChange,
    DefinitionResult,
    FeatureDefinition,
    FeatureFilter,
    FeatureInfo,
    FeatureSpec,
    HistoryQuery,
    Resource,
    ResourceTypeCount,
    SetResult,
    SnapshotPage,
    WriteResult,
)
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry, check_not_trimmed

T = TypeVar("T")


class MemoryStore(Store):
    """Dict-backed store. Every method finishes without awaiting, so each is atomic."""

    name = "memory"
    shared_between_processes = False
    never_suspends = True
    supports_catalog = True

    def __init__(self) -> None:
        self._features: dict[Resource, set[str]] = {}
        self._holders: dict[str, set[Resource]] = {}
        #: The change log from revision ``_trimmed + 1`` on (earlier ones were trimmed).
        self._changes: list[ChangeEvent] = []
        # The catalog, and what listings and histories need (see the section below).
        self._definitions: dict[str, FeatureDefinition] = {}
        self._ids_of_type: dict[str, set[str]] = {}
        self._history_of: dict[object, list[int]] = {}
        self._sorted_names: list[str] | None = None
        self._sorted_types: list[str] | None = None
        self._sorted_ids: dict[str, list[str]] = {}
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

    def _record(
        self, op: ChangeOp, resource: Resource | None, feature: str, actor: str | None
    ) -> int:
        revision = self._revision + 1
        self._changes.append(ChangeEvent(revision, op, resource, feature, datetime.now(UTC), actor))
        # History indexes: the revisions of each resource, feature and actor, ascending.
        keys: list[object] = [("feature", feature), ("actor", actor)]
        if resource is not None:
            keys.append(resource)
        for key in keys:
            self._history_of.setdefault(key, []).append(revision)
        return revision

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return self._add(resource, feature, actor)

    def _add(self, resource: Resource, feature: str, actor: str | None) -> WriteResult:
        features = self._features.get(resource)
        if features is None:
            features = self._features[resource] = set()
            self._ids_of_type.setdefault(resource.type, set()).add(resource.id)
            self._sorted_ids.pop(resource.type, None)
            self._sorted_types = None
        elif feature in features:
            return WriteResult(False, self._revision)
        features.add(feature)
        holders = self._holders.get(feature)
        if holders is None:
            holders = self._holders[feature] = set()
            self._sorted_names = None
        holders.add(resource)
        return WriteResult(True, self._record("add", resource, feature, actor))

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return self._remove(resource, feature, actor)

    def _remove(self, resource: Resource, feature: str, actor: str | None) -> WriteResult:
        features = self._features.get(resource)
        if features is None or feature not in features:
            return WriteResult(False, self._revision)
        features.discard(feature)
        if not features:
            del self._features[resource]
            ids = self._ids_of_type[resource.type]
            ids.discard(resource.id)
            if not ids:
                del self._ids_of_type[resource.type]
            self._sorted_ids.pop(resource.type, None)
            self._sorted_types = None
        holders = self._holders[feature]
        holders.discard(resource)
        if not holders:
            del self._holders[feature]
            self._sorted_names = None
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
        check_not_trimmed(revision, self._trimmed + 1)
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

    # -- catalog, listings, history and bulk ------------------------------------------
    # Listings bisect sorted views of the names, rebuilt only after a change made one
    # stale; histories bisect the per-resource, per-feature and per-actor revision lists.

    def _info(self, name: str) -> FeatureInfo:
        return FeatureInfo(name, len(self._holders.get(name, ())), self._definitions.get(name))

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        return self._definition_write(DefinitionChange.define(spec), actor)

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        return self._definition_write(DefinitionChange.archive(name), actor)

    def _definition_write(self, write: DefinitionChange, actor: str | None) -> DefinitionResult:
        name, current = write.name, self._definitions.get(write.name)
        wanted = write.change(current, datetime.now(UTC))
        if wanted is None:
            return DefinitionResult(False, self._revision, self._info(name))
        if current is None and name not in self._holders:
            self._sorted_names = None
        self._definitions[name] = wanted
        revision = self._record(write.op, None, name, actor)
        return DefinitionResult(True, revision, self._info(name))

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        return [self._info(name) for name in names]

    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        if self._sorted_names is None:
            self._sorted_names = sorted(self._holders.keys() | self._definitions.keys())
        names = self._sorted_names
        start = 0 if after is None else bisect.bisect_right(names, after)
        return _first((self._info(name) for name in names[start:]), limit, filter.keeps)

    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        if self._sorted_types is None:
            self._sorted_types = sorted(self._ids_of_type)
        types = self._sorted_types
        start = 0 if after is None else bisect.bisect_right(types, after)
        return [
            ResourceTypeCount(name, len(self._ids_of_type[name]))
            for name in types[start : start + limit]
        ]

    async def resource_count(self, type: str) -> int:
        return len(self._ids_of_type.get(type, ()))

    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        ids = self._sorted_ids.get(type)
        if ids is None:
            ids = self._sorted_ids[type] = sorted(self._ids_of_type.get(type, ()))
        start = 0 if after is None else bisect.bisect_right(ids, after)
        return [Resource(type, id_) for id_ in ids[start : start + limit]]

    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        lists: list[list[int]] = []
        if query.resource is not None:
            lists.append(self._history_of.get(query.resource, []))
        if query.feature is not None:
            lists.append(self._history_of.get(("feature", query.feature), []))
        if query.actor is not None:
            lists.append(self._history_of.get(("actor", query.actor), []))
        top = self._revision + 1 if before is None else min(before, self._revision + 1)
        # Revision r sits at index r - 1 - _trimmed; trimmed revisions are gone.
        skip = self._trimmed + 1
        if not lists:
            revisions: Sequence[int] = range(top - 1, self._trimmed, -1)
            return [self._changes[r - skip] for r in revisions[:limit]]
        # Walk the shortest list backwards and check the other filters on each event.
        shortest = min(lists, key=len)
        end = bisect.bisect_left(shortest, top)
        start = bisect.bisect_right(shortest, self._trimmed)
        newest_first = (self._changes[shortest[i] - skip] for i in range(end - 1, start - 1, -1))
        return _first(newest_first, limit, query.keeps)

    def _refused(self, features: Iterable[str]) -> list[str]:
        return sorted(
            {f for f in features if (d := self._definitions.get(f)) is None or d.archived_at}
        )

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        if require_defined:
            refused = self._refused(feature for _, feature in items)
            if refused:
                return BulkResult([None] * len(items), self._revision, refused)
        revisions = [self._add(r, f, actor) for r, f in items]
        return BulkResult([w.revision if w.changed else None for w in revisions], self._revision)

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        revisions = [self._remove(r, f, actor) for r, f in items]
        return BulkResult([w.revision if w.changed else None for w in revisions], self._revision)

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        wanted = set(features)
        if require_defined:
            refused = self._refused(wanted)
            if refused:
                return SetResult([], [], self._revision, refused)
        current = set(self._features.get(resource, ()))
        removed, added = sorted(current - wanted), sorted(wanted - current)
        for feature in removed:
            self._remove(resource, feature, actor)
        for feature in added:
            self._add(resource, feature, actor)
        return SetResult(removed, added, self._revision)


def _first(items: Iterable[T], limit: int, keep: Callable[[T], bool]) -> list[T]:
    found: list[T] = []
    for item in items:
        if len(found) >= limit:
            break
        if keep(item):
            found.append(item)
    return found


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    return MemoryStore()


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "memory",
        _factory,
        description="In-process dictionaries; fast, and empty again after a restart.",
    )
