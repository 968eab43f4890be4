"""LocalReplica tells its listeners what each attempt to follow the store brought."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from features_gql import FeaturesAPI
from features_gql.domain import ChangeEvent
from features_gql.errors import StoreError
from features_gql.replica import LocalReplica
from features_gql_plugins.failing_store import FailingStore
from features_gql_plugins.memory_store import MemoryStore


async def test_listeners_hear_changes_and_failures_and_one_that_raises_harms_none() -> None:
    store = FailingStore(MemoryStore())
    api = FeaturesAPI(store)
    await api.add(("pipeline", "p1"), "speedups")
    replica = LocalReplica(api, interval=0.01, batch=2)
    heard: list[tuple[list[int], str | None]] = []

    def broken(changes: Sequence[ChangeEvent], error: StoreError | None) -> None:
        raise RuntimeError("a listener's own bug")

    def listener(changes: Sequence[ChangeEvent], error: StoreError | None) -> None:
        heard.append(([c.revision for c in changes], None if error is None else error.outcome))

    replica.listeners += [broken, listener]
    await replica.start()
    try:
        # The initial load is heard too: a snapshot, so no change events come with it.
        assert heard[0] == ([], None)
        for feature in ("a", "b", "c"):
            await api.add(("pipeline", "p1"), feature)
        async with asyncio.timeout(5):
            while sum(len(revisions) for revisions, _ in heard) < 3:
                await asyncio.sleep(0.005)
        assert sorted(r for revisions, _ in heard for r in revisions) == [2, 3, 4]
        store.change_faults({"outage": True})
        async with asyncio.timeout(5):
            while heard[-1] != ([], "unavailable"):
                await asyncio.sleep(0.005)
        store.change_faults({"outage": False})
        async with asyncio.timeout(5):
            while heard[-1] != ([], None):
                await asyncio.sleep(0.005)
        assert replica.has(("pipeline", "p1"), "c")
    finally:
        await replica.stop()
