"""Store plugins registered by the tests, to drive failure paths through the real API.

They subclass the memory store and break one way each; they are registered through
the same hook as every other store.
"""

from __future__ import annotations

import asyncio

from features_gql import StoreUnavailable, hookimpl
from features_gql.domain import Resource
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry
from features_gql_plugins.memory_store import MemoryStore


class DownStore(MemoryStore):
    """Every read says the store is down."""

    name = "down"

    async def has(self, resource: Resource, feature: str) -> bool:
        raise StoreUnavailable("connection refused by 10.0.0.7:27017 (internal detail)")

    async def features_of_many(self, resources: object) -> list[list[str]]:  # type: ignore[override]
        raise StoreUnavailable("connection refused by 10.0.0.7:27017 (internal detail)")


class StalledStore(MemoryStore):
    """Reads and probes never return."""

    name = "stalled"
    never_suspends = False  # it does suspend: the deadline must be armed

    async def ping(self) -> None:
        await asyncio.Event().wait()

    async def has(self, resource: Resource, feature: str) -> bool:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class BuggyStore(MemoryStore):
    """Reads raise an exception no store should raise."""

    name = "buggy"

    async def ping(self) -> None:
        raise KeyError("secret-internal-state")

    async def has(self, resource: Resource, feature: str) -> bool:
        raise KeyError("secret-internal-state")


def _factory(cls: type[Store]) -> object:
    def build(options: StoreOptions, builder: StoreBuilder) -> Store:
        return cls()

    return build


class BrokenStoresPlugin:
    @hookimpl
    def features_gql_register_stores(self, registry: StoreRegistry) -> None:
        registry.add("down", _factory(DownStore), description="test: always down")  # type: ignore[arg-type]
        registry.add("stalled", _factory(StalledStore), description="test: never answers")  # type: ignore[arg-type]
        registry.add("buggy", _factory(BuggyStore), description="test: raises KeyError")  # type: ignore[arg-type]
