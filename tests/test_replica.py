"""The in-process replica follows the change log and survives store outages."""

from __future__ import annotations

import asyncio

import pytest

from features_gql import FeaturesAPI
from features_gql.domain import Resource
from features_gql.replica import LocalReplica
from features_gql_plugins.failing_store import FailingStore
from features_gql_plugins.memory_store import MemoryStore


async def test_replica_loads_and_follows_changes() -> None:
    api = FeaturesAPI(MemoryStore())
    await api.add(("pipeline", "p1"), "speedups")
    await api.add(("pipeline", "p1"), "beta")
    await api.remove(("pipeline", "p1"), "beta")
    replica = LocalReplica(api, interval=0.01, batch=2)
    await replica.start()
    try:
        assert replica.has(("pipeline", "p1"), "speedups") is True
        assert replica.has(("pipeline", "p1"), "beta") is False
        assert replica.revision == 3
        await api.add(("app", "a"), "beta")
        async with asyncio.timeout(5):
            while not replica.has(("app", "a"), "beta"):
                await asyncio.sleep(0.01)
        assert replica.revision == 4
        assert replica.staleness is not None
    finally:
        await replica.stop()


async def test_replica_answers_from_its_copy_while_the_store_is_down() -> None:
    store = FailingStore(MemoryStore())
    api = FeaturesAPI(store)
    await api.add(("pipeline", "p1"), "speedups")
    replica = LocalReplica(api, interval=0.01)
    await replica.start()
    try:
        store.change_faults({"outage": True})
        await asyncio.sleep(0.1)
        assert replica.last_error is not None
        assert replica.has(("pipeline", "p1"), "speedups") is True
        assert (replica.staleness or 0) >= 0.05
        store.change_faults({"outage": False})
        async with asyncio.timeout(5):
            while replica.last_error is not None:
                await asyncio.sleep(0.01)
    finally:
        await replica.stop()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        LocalReplica(FeaturesAPI(MemoryStore()), interval=0)


async def test_replica_takes_a_resource_as_the_api_does() -> None:
    api = FeaturesAPI(MemoryStore())
    await api.add(("pipeline", "p1"), "speedups")
    replica = LocalReplica(api)
    await replica.start()
    try:
        for resource in (("pipeline", "p1"), Resource("pipeline", "p1")):
            assert await api.has(resource, "speedups") is True
            assert replica.has(resource, "speedups") is True
            assert replica.has(resource, "beta") is False
        assert replica.has(("pipeline", "p2"), "speedups") is False
        await api.remove(("pipeline", "p1"), "speedups")
        await replica.refresh()
        assert replica.has(Resource("pipeline", "p1"), "speedups") is False
    finally:
        await replica.stop()
