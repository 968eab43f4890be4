"""The ``sqlite`` store: one file, WAL journal, safe across restarts and ``kill -9``.

The default store of ``features-gql serve``. Reads and writes each run on their own
thread with their own connection, so a slow write never blocks a read (WAL lets
readers see the last commit while a writer works). Several processes may share one
file: SQLite serialises writers, and revisions come from an AUTOINCREMENT key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from features_gql import hookimpl
from features_gql.domain import (
    Assignment,
    ChangeEvent,
    ChangeOp,
    Resource,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import ChangesTrimmed, ConfigError, StoreTimeout, StoreUnavailable
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry

T = TypeVar("T")

log = logging.getLogger("features_gql.sqlite")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assignments (
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    feature       TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, feature)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assignments_by_feature
    ON assignments (feature, resource_type, resource_id);
CREATE TABLE IF NOT EXISTS changes (
    revision      INTEGER PRIMARY KEY AUTOINCREMENT,
    op            TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    feature       TEXT NOT NULL,
    at            TEXT NOT NULL,
    actor         TEXT
);
"""

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
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path} was written by a newer features-gql (schema {version}, "
                        f"this one knows {SCHEMA_VERSION})"
                    )
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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
        conn: sqlite3.Connection, op: ChangeOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if op == "add":
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO assignments VALUES (?, ?, ?)",
                    (resource.type, resource.id, feature),
                )
            else:
                cursor = conn.execute(
                    "DELETE FROM assignments WHERE resource_type = ? AND resource_id = ? "
                    "AND feature = ?",
                    (resource.type, resource.id, feature),
                )
            if cursor.rowcount == 0:
                revision = _revision(conn)
                conn.execute("COMMIT")
                return WriteResult(False, revision)
            cursor = conn.execute(
                "INSERT INTO changes (op, resource_type, resource_id, feature, at, actor) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (op, resource.type, resource.id, feature, datetime.now(UTC).isoformat(), actor),
            )
            revision = int(cursor.lastrowid or 0)
            conn.execute("COMMIT")
            return WriteResult(True, revision)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
            return [
                ChangeEvent(rev, op, Resource(t, i), f, datetime.fromisoformat(at), actor)
                for rev, op, t, i, f, at, actor in rows
            ]

        events = await self._run(self._reader_thread, query)
        if events and events[0].revision > revision + 1:
            # Revisions are dense, so a hole at the start is a trimmed log.
            raise ChangesTrimmed(revision, events[0].revision)
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
