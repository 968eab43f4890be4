"""The sqlite store beyond the store contract: its options, its locks, its journal, its close.

A second, plain ``sqlite3`` connection to the same file plays the other process (or the
operator with a shell) that holds locks and changes the file under the store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from features_gql import FeaturesAPI, StoreTimeout, StoreUnavailable
from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.errors import ConfigError
from features_gql.events import OperationEvent
from features_gql_plugins.sqlite_store import SQLiteStore

LONG = 60.0  # a deadline that never ends a test: the store's own limits must act first


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "flags.db")


@pytest.fixture
def other(db: str) -> Iterator[sqlite3.Connection]:
    """Another connection to the file, in autocommit mode so the test owns every lock."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    yield conn
    conn.close()


def has_wal_file(db: str) -> bool:
    return Path(db + "-wal").exists()


async def opened(db: str, **options: Any) -> SQLiteStore:
    store = SQLiteStore(db, **options)
    await store.open()
    return store


@pytest.fixture
async def store(db: str) -> AsyncIterator[SQLiteStore]:
    store = await opened(db, busy_timeout_ms=0)
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "synchronous=normal busy_timeout=5000ms"),
        ({"synchronous": "full", "busy_timeout_ms": 0}, "synchronous=full busy_timeout=0ms"),
        (
            {"synchronous": "EXTRA", "busy_timeout_ms": 1234},
            "synchronous=extra busy_timeout=1234ms",
        ),
    ],
)
async def test_the_configured_synchronous_and_busy_timeout_take_effect(
    db: str, caplog: pytest.LogCaptureFixture, options: dict[str, Any], expected: str
) -> None:
    service = build(Settings(store={"plugin": "sqlite", "path": db, **options}, loggers=()))
    with caplog.at_level("INFO", logger="features_gql.sqlite"):
        await service.store.open()
    try:
        (line,) = [r.getMessage() for r in caplog.records if r.name == "features_gql.sqlite"]
        assert line == f"sqlite file {db} open: journal_mode=wal {expected}"
    finally:
        await service.store.close()


def test_an_unknown_synchronous_setting_is_refused(db: str) -> None:
    with pytest.raises(ConfigError, match="synchronous must be one of normal, full, extra"):
        build(Settings(store={"plugin": "sqlite", "path": db, "synchronous": "off"}, loggers=()))


async def test_the_file_is_kept_in_wal_mode(store: SQLiteStore, other: sqlite3.Connection) -> None:
    # WAL is a property of the file: every connection, in any process, sees it.
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_reads_go_on_while_another_process_holds_an_exclusive_write_lock(
    store: SQLiteStore, other: sqlite3.Connection
) -> None:
    api = FeaturesAPI(store, deadline=LONG)
    await api.add(("app", "a1"), "beta")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("DELETE FROM assignments")
    try:
        # In WAL mode readers see the last commit; a rollback journal would lock them out.
        assert await api.has(("app", "a1"), "beta") is True
        assert await api.check_many([(("app", "a1"), "beta")]) == [True]
    finally:
        other.execute("ROLLBACK")


async def test_a_locked_database_is_a_store_timeout(
    store: SQLiteStore, other: sqlite3.Connection
) -> None:
    events: list[OperationEvent] = []
    api = FeaturesAPI(store, deadline=LONG, on_event=events.append)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreTimeout, match="sqlite database is locked"):
            await api.add(("app", "a1"), "beta")
    finally:
        other.execute("ROLLBACK")
    assert [(e.op, e.outcome) for e in events] == [("add", "timeout")]
    # The lock is gone: the same write goes through, and only once.
    assert (await api.add(("app", "a1"), "beta")).changed is True
    assert [c.revision for c in await api.changes_since()] == [1]


async def test_busy_timeout_0_gives_up_at_once_on_a_locked_database(
    db: str, other: sqlite3.Connection
) -> None:
    store = await opened(db, busy_timeout_ms=0)
    api = FeaturesAPI(store, deadline=LONG)
    other.execute("BEGIN IMMEDIATE")
    write = asyncio.ensure_future(api.add(("app", "a1"), "beta"))
    try:
        # Hold the lock until the write has given up. A store that waited for locks
        # would still be waiting when they are released, and would then succeed.
        await asyncio.wait({write}, timeout=3)
    finally:
        other.execute("ROLLBACK")
        with pytest.raises(StoreTimeout):
            await write
        await store.close()


async def test_a_longer_busy_timeout_waits_for_the_lock_to_be_released(
    db: str, other: sqlite3.Connection
) -> None:
    store = await opened(db, busy_timeout_ms=int(LONG * 1000))
    api = FeaturesAPI(store, deadline=LONG)
    other.execute("BEGIN IMMEDIATE")
    write = asyncio.ensure_future(api.add(("app", "a1"), "beta"))
    try:
        await asyncio.sleep(0.3)  # let the write meet the lock
        assert not write.done()
    finally:
        other.execute("ROLLBACK")
    try:
        assert (await write).changed is True
    finally:
        await store.close()


async def test_a_write_that_fails_midway_leaves_nothing_behind(
    store: SQLiteStore, other: sqlite3.Connection
) -> None:
    api = FeaturesAPI(store, deadline=LONG)
    # Someone refuses change-log entries: the assignment, written first, must not stay.
    other.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON changes BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(StoreUnavailable, match="sqlite error: no"):
        await api.add(("app", "a1"), "beta")
    assert await api.has(("app", "a1"), "beta") is False
    assert await api.revision() == 0
    other.execute("DROP TRIGGER refuse")
    # The store is not stuck in the failed transaction: the next write goes through.
    result = await api.add(("app", "a1"), "beta")
    assert (result.changed, result.revision) == (True, 1)
    assert await api.has(("app", "a1"), "beta") is True


async def test_a_closed_store_says_so_and_leaves_a_clean_file(db: str) -> None:
    store = await opened(db)
    api = FeaturesAPI(store, deadline=LONG)
    await api.add(("app", "a1"), "beta")
    assert has_wal_file(db)
    await store.close()
    # The last connection checkpoints the journal into the file and removes it.
    assert not has_wal_file(db)
    for call in (api.has(("app", "a1"), "beta"), api.add(("app", "a2"), "beta"), api.revision()):
        with pytest.raises(StoreUnavailable, match="sqlite store is not open"):
            await call
    again = await opened(db)
    try:
        assert await FeaturesAPI(again).has(("app", "a1"), "beta") is True
    finally:
        await again.close()


async def test_a_file_from_a_newer_version_is_refused(db: str, other: sqlite3.Connection) -> None:
    other.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="written by a newer features-gql"):
        await opened(db)
