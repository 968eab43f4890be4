"""The ``slow`` store: a wrapper that adds latency to another store, or never answers.

    [store]
    plugin = "slow"
    delay_ms = 30          # fixed latency added to every selected call
    jitter_ms = 20         # plus a uniform random 0..jitter_ms (seeded with seed)
    seed = 7
    operations = ["writes"]  # or "reads", "all", or names: has, add, check_many...
    stall = false          # true: selected calls wait until stall is switched off
    [store.inner]
    plugin = "sqlite"

The delay comes before the call reaches the inner store, so a call that misses its
deadline never took effect. A delayed call marks its task (``injected_delay``), so a
deadline it makes the API miss is reported as ``injected``. The settings can be changed
while the service runs (``POST /admin/faults``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from features_gql import hookimpl
from features_gql.domain import (
    Assignment,
    BulkResult,
    ChangeEvent,
    DefinitionResult,
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
from features_gql.faults import ALL_OPERATIONS, describe, read_operations, read_seed
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry, WrappingStore
from features_gql.stores.base import delaying_on_purpose

log = logging.getLogger("features_gql.faults")


@dataclass(frozen=True)
class SlowSettings:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int | None = None
    operations: frozenset[str] = ALL_OPERATIONS
    stall: bool = False

    @classmethod
    def read(cls, options: StoreOptions, base: SlowSettings | None = None) -> SlowSettings:
        """Settings from ``options``; options not given keep their value in ``base``."""
        base = base or cls()
        return cls(
            delay_ms=options.get_float("delay_ms", base.delay_ms, minimum=0),
            jitter_ms=options.get_float("jitter_ms", base.jitter_ms, minimum=0),
            seed=read_seed(options, base.seed),
            operations=read_operations(options, base.operations),
            stall=options.get_bool("stall", base.stall),
        )


class SlowStore(WrappingStore):
    """Delays the selected operations of ``inner``; with ``stall``, holds them indefinitely."""

    plugin = "slow"

    def __init__(self, inner: Store, settings: SlowSettings | None = None) -> None:
        super().__init__(inner)
        self.name = f"slow({inner.name})"
        self.settings = settings or SlowSettings()
        self._rng = random.Random(self.settings.seed)
        #: Set while not stalling; stalled calls wait on it.
        self._released = asyncio.Event()
        if not self.settings.stall:
            self._released.set()
        self.calls = 0
        self.delayed = 0
        self.stalled = 0

    # -- fault control ----------------------------------------------------------------

    def fault_state(self) -> dict[str, Any]:
        s = self.settings
        return {
            "delay_ms": s.delay_ms,
            "jitter_ms": s.jitter_ms,
            "seed": s.seed,
            "operations": sorted(s.operations),
            "stall": s.stall,
            "calls": self.calls,
            "delayed": self.delayed,
            "stalled": self.stalled,
        }

    def change_faults(self, changes: Mapping[str, Any]) -> None:
        options = StoreOptions(self.plugin, changes, "admin")
        settings = SlowSettings.read(options, self.settings)
        options.check_all_used()
        self.settings = settings
        if "seed" in changes:
            self._rng = random.Random(settings.seed)
        if settings.stall:
            self._released.clear()
        else:
            # Calls stalled so far carry on (unless their deadline already ended them).
            self._released.set()

    # -- the delay --------------------------------------------------------------------

    async def _delay(self, op: str) -> None:
        settings = self.settings
        if op not in settings.operations:
            return
        self.calls += 1
        seconds = settings.delay_ms / 1000
        if settings.jitter_ms:
            seconds += self._rng.uniform(0, settings.jitter_ms) / 1000
        if not settings.stall and seconds <= 0:
            return
        with delaying_on_purpose():
            if settings.stall:
                self.stalled += 1
                await self._released.wait()
            if seconds > 0:
                self.delayed += 1
                await asyncio.sleep(seconds)

    async def open(self) -> None:
        await super().open()
        log.warning("fault injection is on: %s (%s)", self.name, describe(self.settings))

    # -- the operations ---------------------------------------------------------------

    async def ping(self) -> None:
        await self._delay("ping")
        await self.inner.ping()

    async def has(self, resource: Resource, feature: str) -> bool:
        await self._delay("has")
        return await self.inner.has(resource, feature)

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        await self._delay("add")
        return await self.inner.add(resource, feature, actor=actor)

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        await self._delay("remove")
        return await self.inner.remove(resource, feature, actor=actor)

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        await self._delay("features_of_many")
        return await self.inner.features_of_many(resources)

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        await self._delay("check_many")
        return await self.inner.check_many(items)

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        await self._delay("resources_with")
        return await self.inner.resources_with(feature, type=type, after=after, limit=limit)

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        await self._delay("changes_since")
        return await self.inner.changes_since(revision, limit=limit)

    async def revision(self) -> int:
        await self._delay("revision")
        return await self.inner.revision()

    # -- catalog, listings, history and bulk ------------------------------------------

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        await self._delay("feature_infos")
        return await self.inner.feature_infos(names)

    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        await self._delay("list_features")
        return await self.inner.list_features(filter, after=after, limit=limit)

    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        await self._delay("resource_types")
        return await self.inner.resource_types(after=after, limit=limit)

    async def resource_count(self, type: str) -> int:
        await self._delay("resource_count")
        return await self.inner.resource_count(type)

    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        await self._delay("list_resources")
        return await self.inner.list_resources(type, after=after, limit=limit)

    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        await self._delay("history")
        return await self.inner.history(query, before=before, limit=limit)

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        await self._delay("define")
        return await self.inner.define(spec, actor=actor)

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        await self._delay("archive")
        return await self.inner.archive(name, actor=actor)

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        await self._delay("add_many")
        return await self.inner.add_many(items, actor=actor, require_defined=require_defined)

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        await self._delay("remove_many")
        return await self.inner.remove_many(items, actor=actor)

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        await self._delay("set_features")
        return await self.inner.set_features(
            resource, features, actor=actor, require_defined=require_defined
        )

    # -- snapshots and feed -------------------------------------------------------------

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        await self._delay("snapshot_page")
        return await self.inner.snapshot_page(after, limit=limit)

    async def trim_changes(self, through: int) -> int:
        await self._delay("trim_changes")
        return await self.inner.trim_changes(through)


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    settings = SlowSettings.read(options)
    return SlowStore(builder.inner(options), settings)


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "slow",
        _factory,
        description="Fault injection: wraps another store and adds latency "
        "(delay_ms, jitter_ms, seed, operations) or stalls it (stall = true).",
    )
