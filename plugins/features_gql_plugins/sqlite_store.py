"""The ``sqlite`` store: one file, WAL journal, safe across restarts and ``kill -9``.

The default store of ``features-gql serve``. Reads and writes each run on their own
thread with their own connection, so a slow write never blocks a read (WAL lets
readers see the last commit while a writer works). Several processes may share one
file: SQLite serialises writers, and revisions come from an AUTOINCREMENT key.

Layout (version 2; a version 1 file is upgraded when it is opened):

``assignments``
    ``(resource_type, resource_id, feature)`` primary key, and an index by feature.
``changes``
    The change log, keyed by revision, with an index per history filter: by
    resource, by feature and by actor (each also ordered by revision, the row id).
``features``
    The catalog: one row per feature that is defined or assigned, with its number
    of resources and its definition. Indexes by kind and by expiry serve listings.
``resource_types``
    One row per type in use, with its number of resources that have a feature.

Every write updates the counts in the same transaction as the assignments, so they
are exact whatever process wrote. Bulk writes hand SQLite the items as one JSON array
(read with ``json_each``), so each statement runs from its first row to its last
without taking Python's GIL back: the import reads the next batch meanwhile. Items of
resources that have no feature yet (an import) go straight in; others go through a
temporary table on the writer's connection, where every step (dropping what changes
nothing, logging each change, the counts) is one statement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from features_gql import hookimpl
from features_gql.domain import (
    Assignment,
    AssignmentOp,
    BulkResult,
    ChangeEvent,
    DefinitionChange,
    DefinitionResult,
    FeatureDefinition,
    FeatureFilter,
    FeatureInfo,
    FeatureKind,
    FeatureSpec,
    HistoryQuery,
    Resource,
    ResourceTypeCount,
    SetResult,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import ConfigError, StoreTimeout, StoreUnavailable
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry, check_not_trimmed

T = TypeVar("T")

log = logging.getLogger("features_gql.sqlite")

SCHEMA_VERSION = 2

_CHANGES = """
CREATE TABLE changes (
    revision      INTEGER PRIMARY KEY AUTOINCREMENT,
    op            TEXT NOT NULL CHECK (op IN ('add', 'remove', 'define', 'archive')),
    resource_type TEXT,  -- NULL for catalog changes (define, archive)
    resource_id   TEXT,
    feature       TEXT NOT NULL,
    at            TEXT NOT NULL,
    actor         TEXT
)"""

#: What version 2 adds to version 1 (besides the new changes table).
_CATALOG = [
    # A secondary index ends with the row id, the revision: each is ordered by revision.
    "CREATE INDEX changes_by_resource ON changes (resource_type, resource_id)",
    "CREATE INDEX changes_by_feature ON changes (feature)",
    "CREATE INDEX changes_by_actor ON changes (actor)",
    """CREATE TABLE features (
        name           TEXT PRIMARY KEY,
        resource_count INTEGER NOT NULL DEFAULT 0,
        defined        INTEGER NOT NULL DEFAULT 0,
        description    TEXT,
        owner          TEXT,
        kind           TEXT,
        expires_at     TEXT,  -- fixed-width ISO 8601 in UTC, so text order is time order
        created_at     TEXT,
        updated_at     TEXT,
        archived_at    TEXT,
        search_text    TEXT   -- name and lowercased description, for search
    ) WITHOUT ROWID""",
    "CREATE INDEX features_by_kind ON features (kind, name)",
    "CREATE INDEX features_by_expiry ON features (expires_at)",
    """CREATE TABLE resource_types (
        name           TEXT PRIMARY KEY,
        resource_count INTEGER NOT NULL
    ) WITHOUT ROWID""",
]

_LAYOUT = [
    """CREATE TABLE assignments (
        resource_type TEXT NOT NULL,
        resource_id   TEXT NOT NULL,
        feature       TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_id, feature)
    ) WITHOUT ROWID""",
    "CREATE INDEX assignments_by_feature ON assignments (feature, resource_type, resource_id)",
    _CHANGES,
    *_CATALOG,
]

#: Version 1 to 2: the change log takes catalog changes (a new table, since SQLite cannot
#: change a CHECK), the history indexes and the catalog, with counts from the assignments.
_UPGRADE_FROM_1 = [
    "ALTER TABLE changes RENAME TO changes_v1",
    _CHANGES,
    "INSERT INTO changes SELECT revision, op, resource_type, resource_id, feature, at, actor "
    "FROM changes_v1 ORDER BY revision",
    "DROP TABLE changes_v1",
    *_CATALOG,
    "INSERT INTO features (name, resource_count) "
    "SELECT feature, count(*) FROM assignments GROUP BY feature",
    "INSERT INTO resource_types (name, resource_count) SELECT resource_type, count(*) "
    "FROM (SELECT DISTINCT resource_type, resource_id FROM assignments) GROUP BY resource_type",
]

#: The items of one bulk write, on the writer's connection only.
_BATCH = """CREATE TEMP TABLE IF NOT EXISTS batch (
    n INTEGER PRIMARY KEY, t TEXT NOT NULL, i TEXT NOT NULL, f TEXT NOT NULL
)"""
_FEATURE_COLUMNS = (
    "name, resource_count, defined, description, owner, kind, expires_at, created_at, "
    "updated_at, archived_at"
)

# Keep well under SQLite's default limit of 32766 bound parameters per statement.
_CHUNK = 2000
_SYNCHRONOUS = ("normal", "full", "extra")
#: ``PRAGMA synchronous`` answers with a number.
_SYNCHRONOUS_NAMES = {0: "off", 1: "normal", 2: "full", 3: "extra"}


def _connect(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _diagnose(path: Path, reason: str) -> str:
    """Why ``path`` cannot be a database file, in words; else SQLite's own ``reason``."""
    for parent in reversed(path.parents):  # from the root down
        if parent.exists() and not parent.is_dir():
            return f"{parent} is not a directory"
    if path.is_dir():
        return "it is a directory"
    if reason == "file is not a database":
        return "the file exists but is not a SQLite database"
    return reason


def _settings(conn: sqlite3.Connection) -> str:
    """What the connection really runs with, read back from SQLite (not from our options)."""
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    name = _SYNCHRONOUS_NAMES.get(synchronous, str(synchronous))
    return f"journal_mode={journal} synchronous={name} busy_timeout={busy}ms"


def _revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


class SQLiteStore(Store):
    name = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "normal", busy_timeout_ms: int = 5000):
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-read")
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite file {self.path}"

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StoreTimeout(f"sqlite database is locked: {exc}") from exc
            raise StoreUnavailable(f"sqlite error: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"sqlite error: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        """A connection to the file, or a StoreUnavailable that names the path and the cause."""
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            return _connect(self.path, self.synchronous, self.busy_timeout_ms)
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                raise StoreTimeout(f"sqlite file {self.path!r} is locked: {exc}") from exc
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreUnavailable(
                f"cannot open sqlite file {self.path!r}: {_diagnose(Path(self.path), reason)}"
            ) from exc

    async def open(self) -> None:
        def open_writer() -> sqlite3.Connection:
            conn = self._connect()
            try:
                _migrate(conn, self.path)
                # Room for the pages a bulk write touches (the default is 2 MiB), and
                # checkpoints every 32 MiB of log rather than 4: a page that every batch
                # changes (an index's right edge, a count) is copied back once, not each
                # time. The log is cut back to 64 MiB after a checkpoint.
                conn.execute("PRAGMA cache_size = -32768")
                conn.execute("PRAGMA wal_autocheckpoint = 8192")
                conn.execute("PRAGMA journal_size_limit = 67108864")
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute(_BATCH)
            except sqlite3.Error as exc:
                conn.close()
                raise StoreUnavailable(
                    f"cannot open sqlite file {self.path!r}: {_diagnose(Path(self.path), str(exc))}"
                ) from exc
            except BaseException:
                conn.close()
                raise
            return conn

        self._writer = await self._run(self._writer_thread, open_writer)
        self._reader = await self._run(self._reader_thread, self._connect)
        settings = await self._run(self._writer_thread, _settings, self._writer)
        # Read back, so a setting SQLite ignored (WAL on a network filesystem) shows.
        log.info("sqlite file %s open: %s", self.path, settings)

    async def close(self) -> None:
        for conn, executor in (
            (self._reader, self._reader_thread),
            (self._writer, self._writer_thread),
        ):
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)
        self._reader = self._writer = None

    @property
    def _r(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("sqlite store is not open")
        return self._reader

    @property
    def _w(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreUnavailable("sqlite store is not open")
        return self._writer

    async def has(self, resource: Resource, feature: str) -> bool:
        conn = self._r

        def query() -> bool:
            row = conn.execute(
                "SELECT 1 FROM assignments WHERE resource_type = ? AND resource_id = ? "
                "AND feature = ?",
                (resource.type, resource.id, feature),
            ).fetchone()
            return row is not None

        return await self._run(self._reader_thread, query)

    @staticmethod
    def _write(
        conn: sqlite3.Connection,
        op: AssignmentOp,
        resource: Resource,
        feature: str,
        actor: str | None,
    ) -> WriteResult:
        with _transaction(conn):
            revision = _apply(conn, op, resource, feature, actor, _now())
            if revision is None:
                return WriteResult(False, _revision(conn))
            return WriteResult(True, revision)

    # The connection is taken here, not on the thread: after close() the thread is gone.
    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        conn = self._w
        return await self._run(
            self._writer_thread, self._write, conn, "add", resource, feature, actor
        )

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        conn = self._w
        return await self._run(
            self._writer_thread, self._write, conn, "remove", resource, feature, actor
        )

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        conn = self._r
        unique = list(dict.fromkeys(resources))

        def query() -> dict[Resource, list[str]]:
            found: dict[Resource, list[str]] = {r: [] for r in unique}
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                values = ", ".join("(?, ?)" for _ in chunk)
                params = [part for r in chunk for part in (r.type, r.id)]
                rows = conn.execute(
                    f"WITH wanted(t, i) AS (VALUES {values}) "
                    "SELECT a.resource_type, a.resource_id, a.feature FROM wanted "
                    "JOIN assignments a ON a.resource_type = wanted.t AND a.resource_id = wanted.i "
                    "ORDER BY a.resource_type, a.resource_id, a.feature",
                    params,
                )
                for type_, id_, feature in rows:
                    found[Resource(type_, id_)].append(feature)
            return found

        found = await self._run(self._reader_thread, query)
        return [list(found[r]) for r in resources]

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        conn = self._r

        def query() -> list[bool]:
            answers = [False] * len(items)
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
                params: list[object] = []
                for offset, (resource, feature) in enumerate(chunk):
                    params += (start + offset, resource.type, resource.id, feature)
                rows = conn.execute(
                    f"WITH wanted(n, t, i, f) AS (VALUES {values}) "
                    "SELECT wanted.n FROM wanted JOIN assignments a "
                    "ON a.resource_type = wanted.t AND a.resource_id = wanted.i "
                    "AND a.feature = wanted.f",
                    params,
                )
                for (n,) in rows:
                    answers[n] = True
            return answers

        return await self._run(self._reader_thread, query)

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        conn = self._r
        sql = "SELECT resource_type, resource_id FROM assignments WHERE feature = ?"
        params: list[object] = [feature]
        if type is not None:
            sql += " AND resource_type = ?"
            params.append(type)
        if after is not None:
            sql += " AND (resource_type, resource_id) > (?, ?)"
            params += (after.type, after.id)
        sql += " ORDER BY resource_type, resource_id LIMIT ?"
        params.append(limit)

        def query() -> list[Resource]:
            return [Resource(t, i) for t, i in conn.execute(sql, params)]

        return await self._run(self._reader_thread, query)

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        conn = self._r

        def query() -> list[ChangeEvent]:
            rows = conn.execute(
                "SELECT revision, op, resource_type, resource_id, feature, at, actor "
                "FROM changes WHERE revision > ? ORDER BY revision LIMIT ?",
                (revision, limit),
            )
            return [_event(row) for row in rows]

        events = await self._run(self._reader_thread, query)
        check_not_trimmed(revision, events[0].revision if events else None)
        return events

    async def revision(self) -> int:
        conn = self._r
        return await self._run(self._reader_thread, _revision, conn)

    # -- snapshots and feed -------------------------------------------------------------

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        conn = self._r
        start = after or Assignment("", "", "")

        def query() -> SnapshotPage:
            # One read transaction: the revision and the rows come from one snapshot.
            conn.execute("BEGIN")
            try:
                revision = _revision(conn)
                rows = conn.execute(
                    "SELECT resource_type, resource_id, feature FROM assignments "
                    "WHERE (resource_type, resource_id, feature) > (?, ?, ?) "
                    "ORDER BY resource_type, resource_id, feature LIMIT ?",
                    (start.type, start.id, start.feature, limit),
                )
                page = list(map(Assignment._make, rows))
            finally:
                conn.execute("COMMIT")
            return SnapshotPage(revision, page)

        return await self._run(self._reader_thread, query)

    async def trim_changes(self, through: int) -> int:
        conn = self._w

        def delete() -> int:
            cursor = conn.execute(
                "DELETE FROM changes WHERE revision <= ? "
                "AND revision < (SELECT max(revision) FROM changes)",
                (through,),
            )
            return cursor.rowcount

        return await self._run(self._writer_thread, delete)

    # -- catalog, listings, history and bulk ------------------------------------------

    supports_catalog = True

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.define(spec), actor)

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.archive(name), actor)

    async def _definition_write(
        self, write: DefinitionChange, actor: str | None
    ) -> DefinitionResult:
        def apply() -> DefinitionResult:
            conn, name = self._w, write.name
            with _transaction(conn):
                current = _feature(conn, name)
                now = _now()
                wanted = write.change(current.definition, now)
                if wanted is None:
                    return DefinitionResult(False, _revision(conn), current)
                _store_definition(conn, name, wanted)
                revision = _log(conn, write.op, None, name, actor, now)
                return DefinitionResult(True, revision, _feature(conn, name))

        return await self._run(self._writer_thread, apply)

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        conn = self._r
        unique = list(dict.fromkeys(names))

        def query() -> dict[str, FeatureInfo]:
            found: dict[str, FeatureInfo] = {}
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                rows = conn.execute(
                    f"SELECT {_FEATURE_COLUMNS} FROM features WHERE name IN ({marks})", chunk
                )
                for row in rows:
                    found[row[0]] = _info(row)
            return found

        found = await self._run(self._reader_thread, query)
        return [found.get(name) or FeatureInfo(name) for name in names]

    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        conn = self._r
        where = ["name > ?"]
        params: list[object] = ["" if after is None else after]
        if filter.kind is not None:
            where.append("kind = ?")
            params.append(filter.kind)
        if filter.defined is not None:
            where.append("defined = ?")
            params.append(int(filter.defined))
        if filter.archived is not None:
            where.append("archived_at IS NOT NULL" if filter.archived else "archived_at IS NULL")
        if filter.expired is True:
            where.append("expires_at <= ?")
            params.append(_ts(filter.now))
        elif filter.expired is False:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(_ts(filter.now))
        if filter.search is not None:
            where.append("instr(coalesce(search_text, name), ?) > 0")
            params.append(filter.search)
        sql = (
            f"SELECT {_FEATURE_COLUMNS} FROM features WHERE {' AND '.join(where)} "
            "ORDER BY name LIMIT ?"
        )
        params.append(limit)

        def query() -> list[FeatureInfo]:
            return [_info(row) for row in conn.execute(sql, params)]

        return await self._run(self._reader_thread, query)

    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        conn = self._r

        def query() -> list[ResourceTypeCount]:
            rows = conn.execute(
                "SELECT name, resource_count FROM resource_types WHERE name > ? "
                "ORDER BY name LIMIT ?",
                ("" if after is None else after, limit),
            )
            return [ResourceTypeCount(name, count) for name, count in rows]

        return await self._run(self._reader_thread, query)

    async def resource_count(self, type: str) -> int:
        conn = self._r

        def query() -> int:
            row = conn.execute(
                "SELECT resource_count FROM resource_types WHERE name = ?", (type,)
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(self._reader_thread, query)

    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        conn = self._r

        def query() -> list[Resource]:
            # GROUP BY follows the primary key: it reads the features of the resources
            # on the page, and stops there.
            rows = conn.execute(
                "SELECT resource_id FROM assignments WHERE resource_type = ? AND resource_id > ? "
                "GROUP BY resource_id ORDER BY resource_id LIMIT ?",
                (type, "" if after is None else after, limit),
            )
            return [Resource(type, id_) for (id_,) in rows]

        return await self._run(self._reader_thread, query)

    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        conn = self._r
        where: list[str] = []
        params: list[object] = []
        if query.resource is not None:
            where.append("resource_type = ? AND resource_id = ?")
            params += (query.resource.type, query.resource.id)
        if query.feature is not None:
            where.append("feature = ?")
            params.append(query.feature)
        if query.actor is not None:
            where.append("actor = ?")
            params.append(query.actor)
        if before is not None:
            where.append("revision < ?")
            params.append(before)
        sql = "SELECT revision, op, resource_type, resource_id, feature, at, actor FROM changes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY revision DESC LIMIT ?"
        params.append(limit)

        def read() -> list[ChangeEvent]:
            return [_event(row) for row in conn.execute(sql, params)]

        return await self._run(self._reader_thread, read)

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        return await self._run(
            self._writer_thread, self._bulk, "add", items, actor, require_defined
        )

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        return await self._run(self._writer_thread, self._bulk, "remove", items, actor, False)

    def _bulk(
        self,
        op: AssignmentOp,
        items: Sequence[tuple[Resource, str]],
        actor: str | None,
        require_defined: bool,
    ) -> BulkResult:
        conn = self._w
        # The first occurrence of each item is the one that may change something.
        keys = [(resource.type, resource.id, feature) for resource, feature in items]
        first = dict(zip(keys, range(len(keys)), strict=True))
        if len(first) < len(keys):  # some item repeats an earlier one
            first = {}
            for n, key in enumerate(keys):
                first.setdefault(key, n)
        revisions: list[int | None] = [None] * len(items)
        with _transaction(conn):
            if not first:
                return BulkResult(revisions, _revision(conn))
            if require_defined:
                features = sorted({f for _, _, f in first})
                refused = _refused(conn, "VALUES " + ", ".join("(?)" for _ in features), features)
                if refused:
                    return BulkResult(revisions, _revision(conn), refused)
            if op == "add":
                resources = dict.fromkeys((t, i) for t, i, _ in first)
                if not _any_present(conn, list(resources)):
                    # New resources only (an import, most often): no item can be there
                    # already, and every one is a change.
                    changed = _add_new(conn, first, resources, actor, _now())
                    for revision, n in changed:
                        revisions[n] = revision
                    return BulkResult(revisions, _revision(conn))
            try:
                conn.execute(
                    "INSERT INTO temp.batch (n, t, i, f) SELECT json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
                    "json_extract(value, '$[3]') FROM json_each(?)",
                    (orjson.dumps([(n, t, i, f) for (t, i, f), n in first.items()]).decode(),),
                )
                changed = (
                    _bulk_add(conn, actor, _now(), len(first) == len(items))
                    if op == "add"
                    else _bulk_remove(conn, actor)
                )
            finally:
                conn.execute("DELETE FROM temp.batch")
            for revision, n in changed:
                revisions[n] = revision
            return BulkResult(revisions, _revision(conn))

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        def write() -> SetResult:
            conn = self._w
            wanted = sorted(set(features))
            with _transaction(conn):
                if require_defined and wanted:
                    values = "VALUES " + ", ".join("(?)" for _ in wanted)
                    refused = _refused(conn, values, wanted)
                    if refused:
                        return SetResult([], [], _revision(conn), refused)
                current = {
                    f
                    for (f,) in conn.execute(
                        "SELECT feature FROM assignments WHERE resource_type = ? "
                        "AND resource_id = ?",
                        (resource.type, resource.id),
                    )
                }
                removed = sorted(current.difference(wanted))
                added = [f for f in wanted if f not in current]
                now = _now()
                for feature in removed:
                    _apply(conn, "remove", resource, feature, actor, now)
                for feature in added:
                    _apply(conn, "add", resource, feature, actor, now)
                return SetResult(removed, added, _revision(conn))

        return await self._run(self._writer_thread, write)


# -- the writer's steps (each runs inside a transaction on the writer's connection) ------


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (this writer now excludes every other), COMMIT, or ROLLBACK."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the layout, or upgrade an older one, in one transaction."""
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path} was written by a newer features-gql (schema {version}, "
                f"this one knows {SCHEMA_VERSION})"
            )
        if (
            version == 0
            and conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'assignments'"
            ).fetchone()
        ):
            version = 1  # version 1 could leave its tables before it set user_version
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            for statement in _LAYOUT:
                conn.execute(statement)
        else:
            # Version 1 created its tables one by one: one may be missing after a crash.
            conn.execute(_CHANGES.replace("TABLE changes", "TABLE IF NOT EXISTS changes"))
            last = _revision(conn)
            for statement in _UPGRADE_FROM_1:
                conn.execute(statement)
            # The recreated change log must never hand out a revision twice.
            conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'changes'", (last,)
            )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC: text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _event(row: tuple[Any, ...]) -> ChangeEvent:
    revision, op, type_, id_, feature, at, actor = row
    resource = None if type_ is None else Resource(type_, id_)
    return ChangeEvent(revision, op, resource, feature, datetime.fromisoformat(at), actor)


def _info(row: tuple[Any, ...]) -> FeatureInfo:
    name, count, defined, description, owner, kind, expires, created, updated, gone = row
    definition = None
    if defined:
        definition = FeatureDefinition(
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(updated),
            description=description,
            owner=owner,
            kind=cast(FeatureKind | None, kind),
            expires_at=_time(expires),
            archived_at=_time(gone),
        )
    return FeatureInfo(name, int(count), definition)


def _feature(conn: sqlite3.Connection, name: str) -> FeatureInfo:
    row = conn.execute(f"SELECT {_FEATURE_COLUMNS} FROM features WHERE name = ?", (name,))
    found = row.fetchone()
    return FeatureInfo(name) if found is None else _info(found)


def _store_definition(conn: sqlite3.Connection, name: str, d: FeatureDefinition) -> None:
    conn.execute(
        "INSERT INTO features (name, defined, description, owner, kind, expires_at, created_at, "
        "updated_at, archived_at, search_text) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET defined = 1, description = excluded.description, "
        "owner = excluded.owner, kind = excluded.kind, expires_at = excluded.expires_at, "
        "created_at = excluded.created_at, updated_at = excluded.updated_at, "
        "archived_at = excluded.archived_at, search_text = excluded.search_text",
        (
            name,
            d.description,
            d.owner,
            d.kind,
            None if d.expires_at is None else _ts(d.expires_at),
            _ts(d.created_at),
            _ts(d.updated_at),
            None if d.archived_at is None else _ts(d.archived_at),
            f"{name}\n{(d.description or '').lower()}",
        ),
    )


def _log(
    conn: sqlite3.Connection,
    op: str,
    resource: Resource | None,
    feature: str,
    actor: str | None,
    at: datetime,
) -> int:
    cursor = conn.execute(
        "INSERT INTO changes (op, resource_type, resource_id, feature, at, actor) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            op,
            None if resource is None else resource.type,
            None if resource is None else resource.id,
            feature,
            at.isoformat(),
            actor,
        ),
    )
    return int(cursor.lastrowid or 0)


def _count(conn: sqlite3.Connection, table: str, name: str, delta: int) -> None:
    """Move a stored count; a row whose count reaches 0 goes (a feature: unless defined)."""
    if delta > 0:
        conn.execute(
            f"INSERT INTO {table} (name, resource_count) VALUES (?, ?) ON CONFLICT (name) "
            "DO UPDATE SET resource_count = resource_count + excluded.resource_count",
            (name, delta),
        )
        return
    conn.execute(
        f"UPDATE {table} SET resource_count = resource_count + ? WHERE name = ?", (delta, name)
    )
    keep = " AND NOT defined" if table == "features" else ""
    conn.execute(f"DELETE FROM {table} WHERE name = ? AND resource_count <= 0{keep}", (name,))


def _apply(
    conn: sqlite3.Connection,
    op: AssignmentOp,
    resource: Resource,
    feature: str,
    actor: str | None,
    at: datetime,
) -> int | None:
    """One add or remove with its event and counts; its revision, or None if no change."""
    key = (resource.type, resource.id, feature)
    if op == "add":
        cursor = conn.execute("INSERT OR IGNORE INTO assignments VALUES (?, ?, ?)", key)
    else:
        cursor = conn.execute(
            "DELETE FROM assignments WHERE resource_type = ? AND resource_id = ? AND feature = ?",
            key,
        )
    if cursor.rowcount == 0:
        return None
    _count(conn, "features", feature, 1 if op == "add" else -1)
    others = conn.execute(
        "SELECT 1 FROM assignments WHERE resource_type = ? AND resource_id = ? AND feature <> ? "
        "LIMIT 1",
        key,
    ).fetchone()
    if others is None:  # the resource's first feature came, or its last one went
        _count(conn, "resource_types", resource.type, 1 if op == "add" else -1)
    return _log(conn, op, resource, feature, actor, at)


def _refused(
    conn: sqlite3.Connection, features_sql: str, params: Sequence[object] = ()
) -> list[str]:
    """The features among ``features_sql`` that strict mode refuses (undefined, archived)."""
    rows = conn.execute(
        f"WITH wanted (f) AS ({features_sql}) SELECT f FROM wanted WHERE f NOT IN "
        "(SELECT name FROM features WHERE defined AND archived_at IS NULL)",
        params,
    )
    return sorted({f for (f,) in rows})


_INSERT_ASSIGNMENTS = "INSERT INTO assignments SELECT t, i, f FROM temp.batch ORDER BY t, i, f"
_NEW_RESOURCES = """
    SELECT t, count(*) FROM (SELECT DISTINCT t, i FROM temp.batch) AS b
    WHERE NOT EXISTS (
        SELECT 1 FROM assignments a WHERE a.resource_type = b.t AND a.resource_id = b.i
    ) GROUP BY t"""


def _any_present(conn: sqlite3.Connection, resources: list[tuple[str, str]]) -> bool:
    """Whether any of these resources has a feature."""
    for start in range(0, len(resources), _CHUNK):
        chunk = resources[start : start + _CHUNK]
        values = ", ".join("(?, ?)" for _ in chunk)
        found = conn.execute(
            f"WITH wanted (t, i) AS (VALUES {values}) SELECT 1 FROM wanted WHERE EXISTS "
            "(SELECT 1 FROM assignments a WHERE a.resource_type = t AND a.resource_id = i) "
            "LIMIT 1",
            [part for resource in chunk for part in resource],
        ).fetchone()
        if found is not None:
            return True
    return False


def _add_new(
    conn: sqlite3.Connection,
    first: dict[tuple[str, str, str], int],
    resources: dict[tuple[str, str], None],
    actor: str | None,
    at: datetime,
) -> list[tuple[int, int]]:
    """Add assignments of resources that had none: each binds once per table, and the
    counts move by what the items say (no query needed to tell what changed)."""
    # The rows travel as one JSON array that SQLite reads itself: each statement then
    # runs without the GIL from its first row to its last, while the next batch is read.
    rows = orjson.dumps(list(first)).decode()
    conn.execute(
        "INSERT INTO assignments SELECT json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?)",
        (rows,),
    )
    base = _revision(conn)
    conn.execute(
        "INSERT INTO changes (op, resource_type, resource_id, feature, at, actor) "
        "SELECT 'add', json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
        "json_extract(value, '$[2]'), ?, ? FROM json_each(?) ORDER BY key",
        (at.isoformat(), actor, rows),
    )
    for feature, count in Counter(f for _, _, f in first).items():
        _count(conn, "features", feature, count)
    for type_, count in Counter(t for t, _ in resources).items():
        _count(conn, "resource_types", type_, count)
    return [(base + k, n) for k, n in enumerate(first.values(), start=1)]


def _bulk_add(
    conn: sqlite3.Connection, actor: str | None, at: datetime, numbered: bool
) -> list[tuple[int, int]]:
    """Add what temp.batch holds; (revision, item number) of each change. ``numbered``:
    the batch's items are numbered 0, 1, 2... (no item repeated another)."""
    present = conn.execute(
        "DELETE FROM temp.batch WHERE EXISTS (SELECT 1 FROM assignments a WHERE "
        "a.resource_type = batch.t AND a.resource_id = batch.i AND a.feature = batch.f)"
    ).rowcount
    new_types = conn.execute(_NEW_RESOURCES).fetchall()  # before they get a feature
    conn.execute(_INSERT_ASSIGNMENTS)
    return _bulk_finish(conn, "add", actor, at, new_types, 1, every=numbered and present == 0)


def _bulk_remove(conn: sqlite3.Connection, actor: str | None) -> list[tuple[int, int]]:
    """Remove what temp.batch holds; (revision, item number) of each change."""
    conn.execute(
        "DELETE FROM temp.batch WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE "
        "a.resource_type = batch.t AND a.resource_id = batch.i AND a.feature = batch.f)"
    )
    conn.execute(
        "DELETE FROM assignments WHERE (resource_type, resource_id, feature) IN "
        "(SELECT t, i, f FROM temp.batch)"
    )
    emptied = conn.execute(_NEW_RESOURCES).fetchall()  # after their last feature went
    return _bulk_finish(conn, "remove", actor, _now(), emptied, -1, every=False)


def _bulk_finish(
    conn: sqlite3.Connection,
    op: AssignmentOp,
    actor: str | None,
    at: datetime,
    type_changes: list[tuple[str, int]],
    sign: int,
    *,
    every: bool,
) -> list[tuple[int, int]]:
    """Log what temp.batch still holds and move the counts. ``every``: it still holds
    every item (numbered 0, 1, 2...), which spares reading their numbers back."""
    base = _revision(conn)
    # Revisions follow the items' order: the row ids AUTOINCREMENT hands out in turn.
    conn.execute(
        "INSERT INTO changes (op, resource_type, resource_id, feature, at, actor) "
        "SELECT ?, t, i, f, ?, ? FROM temp.batch ORDER BY n",
        (op, at.isoformat(), actor),
    )
    for feature, count in conn.execute("SELECT f, count(*) FROM temp.batch GROUP BY f").fetchall():
        _count(conn, "features", feature, sign * count)
    for type_, count in type_changes:
        _count(conn, "resource_types", type_, sign * count)
    if every:
        logged = _revision(conn) - base
        return [(base + k, k - 1) for k in range(1, logged + 1)]
    return [
        (base + k, n)
        for k, (n,) in enumerate(conn.execute("SELECT n FROM temp.batch ORDER BY n"), start=1)
    ]


def default_path() -> Path:
    """Where ``serve`` keeps its flags when no store is configured."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "features-gql" / "features.db"


def path_from_url(url: str) -> str:
    """``sqlite:///abs/f.db`` -> ``/abs/f.db``; ``sqlite://rel/f.db`` -> ``rel/f.db``."""
    if not url.lower().startswith("sqlite://"):
        raise ConfigError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url[len("sqlite://") :].split("?", 1)[0]
    if not path:
        raise ConfigError(f"sqlite URL {url!r} names no file (expected sqlite:///path/to/file.db)")
    return path


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    url = options.get_str("url")
    path = options.get_str("path")
    if url is not None and path is not None:
        raise ConfigError(f"{options.where}: give the sqlite store either url or path, not both")
    if url is not None:
        path = path_from_url(url)
    synchronous = (options.get_str("synchronous", "normal") or "normal").lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigError(
            f"{options.where}: synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
            f"got {synchronous!r}"
        )
    busy = options.get_int("busy_timeout_ms", 5000, minimum=0)
    return SQLiteStore(
        str(Path(path).expanduser()) if path else str(default_path()),
        synchronous=synchronous,
        busy_timeout_ms=busy,
    )


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "sqlite",
        _factory,
        description="A SQLite file (WAL); the default, persistent with zero setup.",
        url_schemes=("sqlite",),
    )
