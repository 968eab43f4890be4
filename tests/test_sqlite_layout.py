"""SQLite details the store contract cannot see: the layout upgrade, and that listings and
histories follow indexes (read from SQLite's own query plans)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features_gql.domain import FeatureFilter, FeatureSpec, HistoryQuery, Resource
from features_gql_plugins.sqlite_store import SCHEMA_VERSION, SQLiteStore, _migrate

#: The layout of the first release, as it wrote it.
VERSION_1 = """
CREATE TABLE assignments (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, feature TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, feature)
) WITHOUT ROWID;
CREATE INDEX assignments_by_feature ON assignments (feature, resource_type, resource_id);
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, feature TEXT NOT NULL,
    at TEXT NOT NULL, actor TEXT
);
PRAGMA user_version = 1;
"""


def test_a_version_1_file_is_upgraded_keeping_its_log(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(VERSION_1)
    rows = [("app", "a", "f"), ("app", "a", "g"), ("app", "b", "f"), ("repo", "x", "f")]
    for revision, row in enumerate(rows, start=1):
        conn.execute("INSERT INTO assignments VALUES (?, ?, ?)", row)
        conn.execute(
            "INSERT INTO changes VALUES (?, 'add', ?, ?, ?, '2024-01-01T00:00:00+00:00', 'old')",
            (revision, *row),
        )
    # A revision handed out whose change was never kept: it must not be handed out again.
    conn.execute("UPDATE sqlite_sequence SET seq = 7 WHERE name = 'changes'")
    conn.commit()
    conn.close()

    async def scenario() -> None:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            assert [i.resource_count for i in await store.feature_infos(["f", "g"])] == [3, 1]
            assert await store.resource_count("app") == 2
            assert [c.revision for c in await store.changes_since(0, limit=10)] == [1, 2, 3, 4]
            defined = await store.define(FeatureSpec("f"), actor=None)
            assert defined.revision == 8
            history = await store.history(HistoryQuery(feature="f"), before=None, limit=10)
            assert [(c.revision, c.op) for c in history] == [
                (8, "define"),
                (4, "add"),
                (3, "add"),
                (1, "add"),
            ]
        finally:
            await store.close()

    asyncio.run(scenario())
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    async def scenario() -> None:
        store = SQLiteStore(str(path))
        try:
            await store.open()
        finally:
            await store.close()

    with pytest.raises(Exception, match="newer features-gql"):
        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (
            "SELECT resource_id FROM assignments WHERE resource_type = ? AND resource_id > ? "
            "GROUP BY resource_id ORDER BY resource_id LIMIT 10",
            "PRIMARY KEY",
        ),
        (
            "SELECT * FROM changes WHERE resource_type = ? AND resource_id = ? AND revision < ? "
            "ORDER BY revision DESC LIMIT 10",
            "changes_by_resource",
        ),
        (
            "SELECT * FROM changes WHERE feature = ? ORDER BY revision DESC LIMIT 10",
            "changes_by_feature",
        ),
        (
            "SELECT * FROM changes WHERE actor = ? ORDER BY revision DESC LIMIT 10",
            "changes_by_actor",
        ),
        ("SELECT * FROM features WHERE name > ? ORDER BY name LIMIT 10", "PRIMARY KEY"),
        (
            "SELECT * FROM features WHERE name > ? AND kind = ? ORDER BY name LIMIT 10",
            "features_by_kind",
        ),
        ("SELECT * FROM resource_types WHERE name > ? ORDER BY name LIMIT 10", "PRIMARY KEY"),
    ],
)
def test_listings_and_histories_follow_an_index(sql: str, index: str) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _migrate(conn, ":memory:")
    plan = " / ".join(
        row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [""] * sql.count("?"))
    )
    assert plan.startswith("SEARCH"), plan  # a range of an index, never a SCAN of the table
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # read in order: no sort of what was found


def test_the_unfiltered_history_reads_the_log_backwards() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _migrate(conn, ":memory:")
    (row,) = conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM changes ORDER BY revision DESC LIMIT 10"
    )
    assert row[3] == "SCAN changes"  # in row id order, stopping at the limit: no sort


def test_counts_stay_exact_with_two_connections_writing(tmp_path: Path) -> None:
    """Two stores (as two processes would) on one file: counts are kept in each write's
    transaction, so they agree with the assignments whoever wrote."""

    async def scenario() -> None:
        one, two = SQLiteStore(str(tmp_path / "f.db")), SQLiteStore(str(tmp_path / "f.db"))
        await one.open()
        await two.open()
        try:
            items = [(Resource("app", str(i)), f"f{i % 3}") for i in range(60)]
            await asyncio.gather(
                one.add_many(items[::2], actor=None),
                two.add_many(items[1::2], actor=None),
                *(one.add(r, "extra", actor=None) for r, _ in items[:10]),
                *(two.remove(r, f, actor=None) for r, f in items[:5]),
            )
            listed = await one.list_features(FeatureFilter(datetime.now(UTC)), after=None, limit=10)
            for info in listed:
                holders = await one.resources_with(info.name, type=None, after=None, limit=1000)
                assert info.resource_count == len(holders), info
            resources = await one.list_resources("app", after=None, limit=1000)
            assert await one.resource_count("app") == len(resources)
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())
