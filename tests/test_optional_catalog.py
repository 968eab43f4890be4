"""The catalog operations are optional for a store: one that has only the core protocol
passes the contract (its catalog scenarios skip), serves flags, and answers the catalog's
fields with NOT_SUPPORTED; strict mode refuses to start on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.domain import ChangeEvent, Resource, WriteResult
from features_gql.errors import ConfigError
from features_gql.stores import Store
from features_gql.testing import StoreContract
from features_gql_plugins.memory_store import MemoryStore
from tests.conftest import StartServer


class CoreOnlyStore(Store):
    """A third-party store of the first protocol: no catalog, listings or bulk writes."""

    name = "core-only"

    def __init__(self) -> None:
        self.data = MemoryStore()

    async def has(self, resource: Resource, feature: str) -> bool:
        return await self.data.has(resource, feature)

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self.data.add(resource, feature, actor=actor)

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self.data.remove(resource, feature, actor=actor)

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        return await self.data.features_of_many(resources)

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        return await self.data.check_many(items)

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        return await self.data.resources_with(feature, type=type, after=after, limit=limit)

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        return await self.data.changes_since(revision, limit=limit)

    async def revision(self) -> int:
        return await self.data.revision()


class TestCoreOnlyStore(StoreContract):
    persistent = False

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        return CoreOnlyStore


class _Plugin:
    from features_gql import hookimpl

    @hookimpl
    def features_gql_register_stores(self, registry: object) -> None:
        registry.add("core-only", lambda options, builder: CoreOnlyStore(), description="test")  # type: ignore[attr-defined]


async def test_the_catalog_answers_not_supported_and_flags_still_work(
    start_server: StartServer,
) -> None:
    server = await start_server("core-only", extra_plugins=[_Plugin()])
    added = await server.gql(
        'mutation { addFeature(resource: {type: "a", id: "1"}, feature: "f") '
        "{ ... on FeatureChange { changed } } }"
    )
    assert added.data == {"addFeature": {"changed": True}}
    response = await server.gql(
        '{ hasFeature(resource: {type: "a", id: "1"}, feature: "f") '
        "features { edges { cursor } } resourceTypes { name } }"
    )
    assert response.data == {"hasFeature": True, "features": None, "resourceTypes": None}
    assert response.codes == ["NOT_SUPPORTED", "NOT_SUPPORTED"]
    assert (
        response.errors[0]["message"]
        == "The feature store of this service does not offer this field."
    )


def test_strict_mode_needs_a_store_with_a_catalog() -> None:
    with pytest.raises(ConfigError, match="strict = true needs a store with a catalog"):
        build(
            Settings(store="core-only", catalog_strict=True, loggers=()), extra_plugins=[_Plugin()]
        )
