"""Changes pushed by the store (PostgreSQL's LISTEN/NOTIFY) wake every follower of the
change log in every process sharing the database, instead of their next poll.

Each test shares one database between two stores, as two processes would: one writes,
the other follows. The followers' polls are made far longer than the test's deadline,
so only a pushed notice can deliver the change in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from features_gql.api import FeaturesAPI
from features_gql.catalog_view import CatalogFollower
from features_gql.domain import FeatureSpec, Resource
from features_gql.feed import ChangeFeed
from features_gql.replica import LocalReplica
from features_gql.replication import store_source
from features_gql.stores import Store
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.postgres_store import PostgresStore

NEVER = 3600.0


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while True:
                answer = condition()
                if answer if isinstance(answer, bool) else await answer:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def two_stores(
    postgres_url: str, postgres_schema: str
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    following, writing = (PostgresStore(postgres_url, schema=postgres_schema) for _ in range(2))
    await following.open()
    await writing.open()
    yield following, writing
    await following.close()
    await writing.close()


async def test_every_commit_is_pushed_with_its_latest_revision(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    following, writing = two_stores
    notices: list[tuple[int, bool]] = []
    assert await following.watch(lambda revision, catalog: notices.append((revision, catalog)))
    await until(lambda: following.watching, "listening")
    # On (re)connection, a notice to catch up with whatever was missed meanwhile.
    await until(lambda: bool(notices), "the catch-up notice")
    assert notices.pop(0) == (0, True)
    await writing.add(Resource("app", "1"), "beta", actor=None)
    await until(lambda: notices == [(1, False)], "an add")
    await writing.define(FeatureSpec("gamma"), actor=None)
    await until(lambda: notices[-1:] == [(2, True)], "a define")
    # A bulk write is one statement: one notice, with its last revision.
    items = [(Resource("app", str(i)), "beta") for i in range(2, 6)]
    await writing.add_many(items, actor=None)
    await until(lambda: notices[-1:] == [(6, False)], "a bulk write")
    assert len(notices) == 3
    # A write that changes nothing commits no change, and pushes nothing.
    await writing.add(Resource("app", "1"), "beta", actor=None)
    await asyncio.sleep(0.3)
    assert len(notices) == 3


async def test_listening_comes_back_after_the_connection_is_lost(
    two_stores: tuple[PostgresStore, PostgresStore],
    postgres_admin: psycopg.Connection[Any],
) -> None:
    following, writing = two_stores
    notices: list[tuple[int, bool]] = []
    await following.watch(lambda revision, catalog: notices.append((revision, catalog)))
    await until(lambda: following.watching, "listening")
    await writing.add(Resource("app", "1"), "beta", actor=None)
    await until(lambda: (1, False) in notices, "the first notice")
    # The server ends the stores' sessions, the listening one among them (a restart, a
    # failover, an idle timeout).
    ended = postgres_admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'features-gql' AND pid <> pg_backend_pid()"
    ).fetchall()
    assert ended, "the stores' sessions were found"
    await until(lambda: not following.watching, "the loss noticed")
    await until(lambda: following.watching, "listening again")
    await writing.add(Resource("app", "2"), "beta", actor=None)
    await until(lambda: notices[-1:] == [(2, False)], "a notice after reconnecting")


async def test_a_store_that_cannot_push_says_so() -> None:
    store: Store = MemoryStore()
    await store.open()
    assert await store.watch(lambda revision, catalog: None) is False
    assert store.watching is False
    await store.close()


async def test_the_feed_the_catalog_and_replicas_wake_on_pushed_changes(
    two_stores: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    following, writing = two_stores
    # The slow poll every follower keeps beside the notices: never, here.
    monkeypatch.setattr(store_source, "WATCHED_INTERVAL", NEVER)
    api = FeaturesAPI(following)
    other = FeaturesAPI(writing)
    assert await api.watch_store()
    await until(lambda: api.pushed, "listening")
    feed = ChangeFeed(api, poll_interval=NEVER)
    catalog = CatalogFollower(api, interval=NEVER, poll=True)
    replica = LocalReplica(api, interval=NEVER)
    await catalog.start(within=5)
    await replica.start()
    received: list[int] = []

    async def subscribe() -> None:
        async for change in feed.subscribe():
            received.append(change.revision)

    subscriber = asyncio.create_task(subscribe())
    try:
        await until(lambda: feed.head is not None, "the feed running")
        await other.add(("app", "1"), "beta")
        await until(lambda: received == [1], "the change at the subscriber")
        await until(lambda: replica.has(("app", "1"), "beta"), "the change in the replica")
        await other.define("gamma")
        await until(lambda: "gamma" in catalog.view.names, "the definition in the catalog")
        await until(lambda: received == [1, 2], "the definition at the subscriber")
    finally:
        subscriber.cancel()
        await feed.stop()
        await catalog.stop()
        await replica.stop()
