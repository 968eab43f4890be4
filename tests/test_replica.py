"""The in-process replica follows the change log and survives store outages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from features_gql import FeaturesAPI
from features_gql.domain import Resource
from features_gql.feed import ChangeFeed
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


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_replica_loads_a_snapshot_when_the_log_was_trimmed() -> None:
    api = FeaturesAPI(MemoryStore())
    for i in range(50):
        await api.add(("pipeline", f"p{i}"), "speedups")
    await api.remove(("pipeline", "p7"), "speedups")
    assert await api.trim_changes(1) == 50  # replaying the log is no longer possible
    replica = LocalReplica(api, interval=60)
    await replica.start()
    try:
        assert len(replica) == 49
        assert replica.revision == 51
        assert replica.has(("pipeline", "p0"), "speedups") is True
        assert replica.has(("pipeline", "p7"), "speedups") is False
        assert replica.has(("pipeline", "p0"), "other") is False
    finally:
        await replica.stop()


async def test_replica_follows_the_feed_without_polling() -> None:
    api = FeaturesAPI(MemoryStore())
    feed = ChangeFeed(api)
    replica = LocalReplica(api, interval=60, feed=feed)  # a poll would take a minute
    await replica.start()
    try:
        await api.add(("pipeline", "p1"), "speedups")
        await until(lambda: replica.has(("pipeline", "p1"), "speedups"))
        await api.remove(("pipeline", "p1"), "speedups")
        await until(lambda: not replica.has(("pipeline", "p1"), "speedups"))
        assert replica.revision == 2
    finally:
        await replica.stop()
        await feed.stop()


@pytest.mark.parametrize("with_feed", [False, True])
async def test_replica_reloads_when_the_store_is_restored_behind_it(with_feed: bool) -> None:
    current, backup = MemoryStore(), MemoryStore()
    api = FeaturesAPI(current)
    for store in (current, backup):
        await store.add(Resource("pipeline", "kept"), "speedups", actor=None)
    await current.add(Resource("pipeline", "lost"), "speedups", actor=None)
    await current.add(Resource("pipeline", "lost"), "beta", actor=None)
    feed = ChangeFeed(api) if with_feed else None
    replica = LocalReplica(api, interval=0.02, feed=feed)
    await replica.start()
    try:
        assert replica.has(("pipeline", "lost"), "speedups") is True
        api.store = backup  # restored from an older backup: revision 1 < 3
        await until(lambda: replica.loads == 2)
        assert replica.has(("pipeline", "lost"), "speedups") is False
        assert replica.has(("pipeline", "kept"), "speedups") is True
        assert replica.revision == 1
        # And it follows the restored store from there.
        await api.add(("pipeline", "new"), "speedups")
        await until(lambda: replica.has(("pipeline", "new"), "speedups"))
    finally:
        await replica.stop()
        if feed is not None:
            await feed.stop()


async def test_replica_reloads_when_the_log_was_trimmed_past_it() -> None:
    store = FailingStore(MemoryStore())
    api = FeaturesAPI(store)
    await api.add(("pipeline", "p0"), "speedups")
    replica = LocalReplica(api, interval=0.02)
    await replica.start()
    try:
        store.change_faults({"outage": True})
        await until(lambda: replica.last_error is not None)
        for i in range(1, 20):
            await store.inner.add(Resource("pipeline", f"p{i}"), "speedups", actor=None)
        await store.inner.trim_changes(15)
        store.change_faults({"outage": False})
        await until(lambda: replica.loads == 2)
        assert all(replica.has(("pipeline", f"p{i}"), "speedups") for i in range(20))
        assert replica.revision == 20
    finally:
        await replica.stop()


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
