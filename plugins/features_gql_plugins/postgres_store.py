"""The ``postgres`` store: flags in tables of the application's own PostgreSQL database.

Selected by ``--store postgresql://user:password@host:5432/dbname`` (or ``postgres://``;
``?schema=flags`` puts the tables in that schema) or a ``[store]`` table with
``plugin = "postgres"``. The driver is asyncpg (docs/postgres.md has the measurement
against psycopg 3 behind that choice); an application that already has an
``asyncpg.Pool`` hands it over as ``pool``.

Layout, in schema ``features_gql`` by default, every table name starting with
``table_prefix`` (empty by default):

``assignments``
    One row per (resource type, resource id, feature), with when and by whom it was
    added. The primary key ``(resource_type, resource_id, feature)`` serves ``has``,
    ``check_many`` and ``features_of_many`` and makes a second insert of the same
    assignment impossible; index ``assignments_by_feature`` on ``(feature,
    resource_type, resource_id)`` serves ``resources_with``, which pages by a row
    comparison on that index, never by OFFSET. Text columns use the ``"C"``
    collation, so order is the order of code points whatever the database's locale.
``changes``
    The change log, primary key ``revision``.
``revision``
    A single row: the last revision handed out.
``schema_version``
    A single row: the version of this layout, for upgrades at start-up.

Consistency scheme
------------------
Every write is one statement, so one transaction and one round trip: insert (or
delete) the assignment; only if that changed something, add one to the single row of
``revision`` and insert the change event under the new value. Either all of it
commits or none of it. The revision row is updated by every changing write, so it
serialises them: a second writer waits for the row lock until the first commits, then
reads the committed value (PostgreSQL re-reads a row it waited for under READ
COMMITTED, its default; under stricter isolation the second writer fails to serialise
instead, and is retried). Revisions are therefore dense and in commit order, across
every process sharing the database, and a reader never sees revision N+1 without N. A write that
rolls back (an error, a lost connection) leaves no hole, since its increment rolls
back with it. Concurrent inserts of one assignment wait for each other on the primary
key; the later one finds the row and reports ``changed = False``. A write that changes
nothing reads the revision in a second statement, which sees every commit before it.
A write whose connection breaks before the answer arrives may have been applied:
repeating it is safe (adds and removes are idempotent) and it is repeated once.

Failures: a refused or lost connection, a server shutting down or out of connections
become :class:`StoreUnavailable`; the driver's timeouts (connect, wait for a pooled
connection, a statement) and a cancelled statement become :class:`StoreTimeout`; a
serialisation failure or deadlock becomes :class:`StoreConflict`. The timeouts default
to values inside the API's 2 s deadline. The store starts while PostgreSQL is down:
the tables are set up on the first call that reaches the server, and every call after
an outage simply connects again. Passwords (in the URL's authority or its
``password`` parameter) never appear in ``describe()`` or in an error message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
from asyncpg.exceptions import InterfaceError, PostgresError

from features_gql.domain import (
    Assignment,
    ChangeEvent,
    ChangeOp,
    Resource,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import (
    ChangesTrimmed,
    ConfigError,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.stores import Store, StoreBuilder, StoreOptions, redact_url

log = logging.getLogger("features_gql.stores.postgres")

T = TypeVar("T")
if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[Any]
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[Any]

#: The version of the table layout this code writes. Each version has a migration below.
SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "features_gql"
DEFAULT_POOL_MAX_SIZE = 10
# Inside the API's default 2 s deadline: the driver gives up first and says why.
DEFAULT_CONNECT_TIMEOUT_MS = 1000
DEFAULT_COMMAND_TIMEOUT_MS = 1500
#: Query parameters of the URL that are the store's options, not the driver's.
URL_OPTIONS = ("schema", "table_prefix")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# The longest name built from it, "<prefix>assignments_by_feature", stays within 63 bytes.
_PREFIX = re.compile(r"[a-z0-9_]{0,40}")
_PASSWORD_PARAMETER = re.compile(r"(?P<key>(?:^|[?&\s])password=)[^&\s]*", re.I)
#: The longest a set-up (version check, creation or upgrade of the tables) may take.
SET_UP_TIMEOUT_SECONDS = 30.0
#: How long a write retries a serialisation failure or deadlock before StoreConflict.
_CONFLICT_BUDGET_SECONDS = 1.0


class IncompatibleDatabase(ConfigError):
    """The store cannot use this database: its tables were written by a newer
    features-gql, or its encoding is not UTF8."""


# -- errors ---------------------------------------------------------------------------

#: SQLSTATEs meaning the server gave up on time: query_canceled (statement_timeout or a
#: cancel request), lock_not_available (lock_timeout).
_TIMEOUT_STATES = frozenset({"57014", "55P03"})
#: serialization_failure, deadlock_detected.
_CONFLICT_STATES = frozenset({"40001", "40P01"})
#: admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03", "57P04"})
_DRIVER_ERRORS = (PostgresError, InterfaceError, OSError, TimeoutError)


def translate_error(exc: BaseException) -> StoreError:
    """The typed store error for a driver error (messages go to logs, not to clients)."""
    if isinstance(exc, TimeoutError):
        # Connecting, waiting for a pooled connection, or a statement took too long.
        return StoreTimeout(f"PostgreSQL did not answer in time ({type(exc).__name__})")
    if isinstance(exc, PostgresError):
        state = exc.sqlstate or ""
        if state in _TIMEOUT_STATES:
            return StoreTimeout(f"PostgreSQL cancelled the statement ({state}): {exc}")
        if state in _CONFLICT_STATES:
            return StoreConflict(f"PostgreSQL aborted a conflicting write ({state}): {exc}")
        if state.startswith("28"):
            return StoreUnavailable(f"PostgreSQL refused the credentials ({state}): {exc}")
        if state.startswith(("08", "53")) or state in _SHUTDOWN_STATES:
            return StoreUnavailable(f"PostgreSQL connection failed ({state}): {exc}")
        return StoreUnavailable(f"PostgreSQL refused the operation ({state}): {exc}")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"cannot reach PostgreSQL: {exc}")
    return StoreUnavailable(f"PostgreSQL error: {type(exc).__name__}: {exc}")


def _connection_lost(exc: BaseException) -> bool:
    """A pooled connection that died (say, it predates a server restart): worth one retry."""
    if isinstance(exc, PostgresError):
        return exc.sqlstate in ("08003", "08006", "57P01", "57P02")
    if isinstance(exc, InterfaceError):
        return "closed" in str(exc)
    return isinstance(exc, ConnectionResetError | BrokenPipeError)


# -- configuration --------------------------------------------------------------------


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for the driver, and the store's own options found in its query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in URL_OPTIONS}
    theirs = [(key, value) for key, value in query if key not in URL_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with URL passwords, ``password=`` parameters and ``secrets`` replaced."""
    text = _PASSWORD_PARAMETER.sub(r"\g<key>***", redact_url(text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [unquote(parts.password)] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    # Both forms: a message may quote the URL as written or the decoded password.
    found += [parts.password] if parts.password else []
    return sorted({p for p in found if p}, key=len, reverse=True)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Tables:
    """The store's qualified table names (``"schema"."<prefix>name"``) and statements."""

    def __init__(self, schema: str, prefix: str) -> None:
        self.schema = schema
        self.prefix = prefix
        self.assignments = self.qualified("assignments")
        self.changes = self.qualified("changes")
        self.revision = self.qualified("revision")
        self.schema_version = self.qualified("schema_version")
        self.by_feature_index = _ident(f"{prefix}assignments_by_feature")

    def qualified(self, table: str) -> str:
        return f"{_ident(self.schema)}.{_ident(self.prefix + table)}"

    def migrations(self) -> dict[int, list[str]]:
        """The statements that bring the layout from version N-1 to N."""
        text = 'text COLLATE "C" NOT NULL'
        return {
            1: [
                f"""CREATE TABLE {self.assignments} (
                    resource_type {text},
                    resource_id   {text},
                    feature       {text},
                    added_at      timestamptz NOT NULL DEFAULT now(),
                    added_by      text,
                    PRIMARY KEY (resource_type, resource_id, feature)
                )""",
                f"""CREATE INDEX {self.by_feature_index}
                    ON {self.assignments} (feature, resource_type, resource_id)""",
                f"""CREATE TABLE {self.changes} (
                    revision      bigint PRIMARY KEY,
                    op            text NOT NULL CHECK (op IN ('add', 'remove')),
                    resource_type {text},
                    resource_id   {text},
                    feature       {text},
                    at            timestamptz NOT NULL,
                    actor         text
                )""",
                f"""CREATE TABLE {self.revision} (
                    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                    revision bigint NOT NULL
                )""",
                f"INSERT INTO {self.revision} (revision) VALUES (0)",
            ],
        }


class Statements:
    """Every statement the store runs, built once for its tables."""

    def __init__(self, t: Tables) -> None:
        key = "resource_type = $1 AND resource_id = $2 AND feature = $3"
        # The change and its event in one statement. The event is inserted for each row
        # the change touched (none or one), with the revision the counter handed out:
        # were the counter row missing, that revision would be NULL and the NOT NULL
        # constraint would roll the change back rather than leave it unlogged.
        log_change = f"""
            counted AS (
                UPDATE {t.revision} SET revision = revision + 1
                WHERE only_row AND EXISTS (SELECT FROM applied) RETURNING revision
            )
            INSERT INTO {t.changes} (revision, op, resource_type, resource_id, feature, at, actor)
            SELECT (SELECT revision FROM counted), $5::text, $1::text, $2::text, $3::text,
                   clock_timestamp(), $4::text
            FROM applied
            RETURNING revision"""
        self.add = f"""
            WITH applied AS (
                INSERT INTO {t.assignments} (resource_type, resource_id, feature, added_by)
                VALUES ($1::text, $2::text, $3::text, $4::text)
                ON CONFLICT DO NOTHING RETURNING 1
            ), {log_change}"""
        self.remove = f"""
            WITH applied AS (
                DELETE FROM {t.assignments} WHERE {key} RETURNING 1
            ), {log_change}"""
        self.revision = f"SELECT revision FROM {t.revision}"
        self.has = f"SELECT EXISTS (SELECT FROM {t.assignments} WHERE {key})"
        self.check_many = f"""
            SELECT wanted.n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
                AS wanted (resource_type, resource_id, feature, n)
            JOIN {t.assignments} a ON a.resource_type = wanted.resource_type
                AND a.resource_id = wanted.resource_id AND a.feature = wanted.feature"""
        self.features_of_many = f"""
            SELECT a.resource_type, a.resource_id, a.feature
            FROM unnest($1::text[], $2::text[]) AS wanted (resource_type, resource_id)
            JOIN {t.assignments} a ON a.resource_type = wanted.resource_type
                AND a.resource_id = wanted.resource_id
            ORDER BY a.resource_type, a.resource_id, a.feature"""
        self.changes_since = f"""
            SELECT revision, op, resource_type, resource_id, feature, at, actor
            FROM {t.changes} WHERE revision > $1 ORDER BY revision LIMIT $2"""
        # resources_with, by (type given, after given): each one range of the index.
        select = f"SELECT resource_type, resource_id FROM {t.assignments} WHERE feature = $1"
        order = "ORDER BY resource_type, resource_id LIMIT"
        self.resources_with = {
            (False, False): f"{select} {order} $2",
            (True, False): f"{select} AND resource_type = $2 {order} $3",
            (False, True): f"{select} AND (resource_type, resource_id) > ($2, $3) {order} $4",
            (True, True): f"{select} AND resource_type = $2 "
            f"AND (resource_type, resource_id) > ($3, $4) {order} $5",
        }
        # -- snapshots and feed --
        # One statement, so one snapshot: the revision and the page agree. The outer
        # join keeps the revision's row when the page is empty.
        self.snapshot_page = f"""
            SELECT r.revision, a.resource_type, a.resource_id, a.feature
            FROM {t.revision} r LEFT JOIN LATERAL (
                SELECT resource_type, resource_id, feature FROM {t.assignments}
                WHERE (resource_type, resource_id, feature) > ($1::text, $2::text, $3::text)
                ORDER BY resource_type, resource_id, feature LIMIT $4
            ) a ON true
            WHERE r.only_row
            ORDER BY a.resource_type, a.resource_id, a.feature"""
        self.trim_changes = f"""
            DELETE FROM {t.changes} WHERE revision <= $1
            AND revision < (SELECT revision FROM {t.revision} WHERE only_row)"""
        self.rebuild_revision = f"""
            INSERT INTO {t.revision} (revision)
            SELECT coalesce(max(revision), 0) FROM {t.changes}
            ON CONFLICT DO NOTHING"""


async def _keep_session(connection: asyncpg.Connection[Any]) -> None:
    """Pool reset for the store's own pool. The store never changes session state, so
    there is nothing to undo but a transaction left open, which a local flag tells: this
    saves asyncpg's default reset query, a round trip per call."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class PostgresStore(Store):
    """Feature assignments and their change log in four PostgreSQL tables."""

    name = "postgres"

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str | None = None,
        table_prefix: str | None = None,
        pool: Pool | None = None,
        pool_max_size: int = DEFAULT_POOL_MAX_SIZE,
        connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS,
        command_timeout_ms: int = DEFAULT_COMMAND_TIMEOUT_MS,
        statement_cache_size: int = 100,
    ) -> None:
        """Give ``url``, or ``pool``: an application's own ``asyncpg.Pool``, which the
        store then uses as it is and never closes.

        ``schema`` and ``table_prefix`` may also be given in the URL's query string
        (``?schema=flags``); given both ways, they must agree.
        """
        if (url is None) == (pool is None):
            raise ConfigError("the postgres store needs exactly one of url and pool")
        in_url: dict[str, str] = {}
        self._driver_url: str | None = None
        if url is not None:
            if not url.lower().startswith(("postgresql://", "postgres://")):
                raise ConfigError(
                    f"not a PostgreSQL URL: {redact(url)!r} "
                    "(expected postgresql://user:password@host:5432/dbname)"
                )
            self._driver_url, in_url = split_url(url)
        self._secrets = _passwords(url) if url else []
        schema = _agree("schema", schema, in_url.get("schema"), DEFAULT_SCHEMA)
        table_prefix = _agree("table_prefix", table_prefix, in_url.get("table_prefix"), "")
        if _SCHEMA_NAME.fullmatch(schema) is None:
            raise ConfigError(
                f"invalid schema {schema!r}: 1-63 characters of a-z, 0-9 and '_', "
                "not starting with a digit"
            )
        if _PREFIX.fullmatch(table_prefix) is None:
            raise ConfigError(
                f"invalid table_prefix {table_prefix!r}: up to 40 characters of a-z, 0-9 and '_'"
            )
        if pool_max_size < 1:
            raise ConfigError(f"pool_max_size must be at least 1 (got {pool_max_size})")
        self.url = url
        self.tables = Tables(schema, table_prefix)
        self.sql = Statements(self.tables)
        self.pool_max_size = pool_max_size
        self.connect_timeout = connect_timeout_ms / 1000
        self.command_timeout = command_timeout_ms / 1000
        self.statement_cache_size = statement_cache_size
        self._given_pool = pool
        self._pool: Pool | None = pool
        self._ready = False
        self._setup: asyncio.Future[None] | None = None
        #: What the server said about itself at set-up.
        self.server_info: dict[str, Any] = {}

    @property
    def schema(self) -> str:
        return self.tables.schema

    @property
    def table_prefix(self) -> str:
        return self.tables.prefix

    def describe(self) -> str:
        where = "the application's pool" if self.url is None else redact(self.url, self._secrets)
        prefix = f", table prefix {self.table_prefix!r}" if self.table_prefix else ""
        return f"postgres {where}, schema {self.schema!r}{prefix}"

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _error(self, exc: BaseException) -> StoreError:
        error = translate_error(exc)
        return type(error)(self._redact(str(error)))

    # -- connection and set-up --------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and try to set up the tables.

        The pool opens connections as calls need them (none at creation), up to
        ``pool_max_size``, and closes those idle for five minutes.

        PostgreSQL being down is no reason not to start: the set-up then happens on
        the first call that reaches the server. A layout newer than this code knows
        is: it raises :class:`IncompatibleDatabase`.
        """
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._driver_url,
                min_size=0,
                max_size=self.pool_max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                statement_cache_size=self.statement_cache_size,
                reset=_keep_session,
                server_settings={"application_name": "features-gql"},
            )
        try:
            await self._ensure_ready(strict=True)
        except ConfigError:
            await self.close()
            raise
        except StoreError as exc:
            log.warning(
                "PostgreSQL is not answering yet (%s); the tables are set up on the first "
                "call that reaches it",
                exc,
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._ready = False
        if self._setup is not None and not self._setup.done():
            self._setup.cancel()
        self._setup = None
        if pool is None or pool is self._given_pool:
            return
        try:
            async with asyncio.timeout(5):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise StoreUnavailable("the postgres store is not open")
        return self._pool

    async def _ensure_ready(self, *, strict: bool = False) -> None:
        """Set up the tables once, on the first call that reaches the server.

        Concurrent callers share one attempt (and its failure): while PostgreSQL is down
        they fail together instead of each waiting for a connection of its own. A
        URL the driver cannot use, or a database the store cannot use, is a
        :class:`ConfigError` at ``open()`` (``strict``) and a StoreUnavailable saying so
        on any later call.
        """
        if self._ready:
            return
        if self._setup is None or self._setup.done():
            self._setup = asyncio.ensure_future(self._set_up())
            self._setup.add_done_callback(_consume)
        try:
            # Shielded: a caller that hits its deadline must not cancel everyone's attempt.
            await asyncio.shield(self._setup)
        except ConfigError as exc:
            if strict:
                raise
            raise StoreUnavailable(str(exc)) from exc

    async def _set_up(self) -> None:
        try:
            # Bounded, so a server that stops answering mid-way (the statements of an
            # application's pool may have no timeout) leaves a set-up a later call retries.
            async with (
                asyncio.timeout(SET_UP_TIMEOUT_SECONDS),
                self.pool.acquire(timeout=self.connect_timeout) as conn,
            ):
                await self._migrate(conn)
                if await conn.fetchval(self.sql.revision) is None:
                    # Deleted behind our back: rebuilt from the change log.
                    await conn.execute(self.sql.rebuild_revision)
                self.server_info = {
                    "version": ".".join(map(str, conn.get_server_version()[:2])),
                    "schema_version": SCHEMA_VERSION,
                }
        except ValueError as exc:
            # asyncpg parses the URL when it first connects: a bad port, sslmode...
            # (ClientConfigurationError is a ValueError too).
            message = self._redact(str(exc))
            raise ConfigError(f"PostgreSQL cannot be used as configured: {message}") from exc
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc
        self._ready = True
        log.info(
            "postgres store ready",
            extra={
                "fields": {
                    "schema": self.schema,
                    "table_prefix": self.table_prefix,
                    **self.server_info,
                }
            },
        )

    async def _installed_version(self, conn: Connection) -> int:
        """The layout version in the database (0: no tables yet)."""
        exists = await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", self.tables.schema_version
        )
        if not exists:
            return 0
        version = await conn.fetchval(f"SELECT version FROM {self.tables.schema_version}")
        return int(version or 0)

    async def _migrate(self, conn: Connection) -> None:
        """Create or upgrade the tables to SCHEMA_VERSION, in one transaction.

        An up-to-date database needs no lock and no privilege beyond reading the
        version. Otherwise a transaction-level advisory lock (named after the schema
        and prefix) makes instances starting together upgrade one at a time; each
        re-reads the version under the lock, so the first does the work and the
        others find it done. DDL is transactional in PostgreSQL: a failed upgrade
        leaves the previous version intact.
        """
        encoding = await conn.fetchval("SELECT current_setting('server_encoding')")
        if encoding != "UTF8":
            raise IncompatibleDatabase(
                f"the database's encoding is {encoding}; the postgres store needs UTF8 "
                "(resource ids are Unicode)"
            )
        if await self._installed_version(conn) == SCHEMA_VERSION:
            return
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"features-gql {self.schema}.{self.table_prefix}",
            )
            version = await self._installed_version(conn)
            if version > SCHEMA_VERSION:
                raise IncompatibleDatabase(
                    f"the tables in schema {self.schema!r} were written by a newer features-gql "
                    f"(layout version {version}; this one knows up to {SCHEMA_VERSION}): "
                    "upgrade features-gql"
                )
            if version == SCHEMA_VERSION:
                return
            schema_exists = await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", self.schema
            )
            if not schema_exists:
                # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the
                # database's CREATE privilege, which a schema made by a DBA spares us.
                await conn.execute(f"CREATE SCHEMA {_ident(self.schema)}")
            if version == 0:
                await conn.execute(
                    f"""CREATE TABLE IF NOT EXISTS {self.tables.schema_version} (
                        only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                        version     integer NOT NULL,
                        upgraded_at timestamptz NOT NULL DEFAULT now()
                    )"""
                )
            migrations = self.tables.migrations()
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in migrations[step]:
                    await conn.execute(statement)
            await conn.execute(
                f"""INSERT INTO {self.tables.schema_version} (version) VALUES ($1)
                ON CONFLICT (only_row) DO UPDATE SET version = $1, upgraded_at = now()""",
                SCHEMA_VERSION,
            )
            log.info(
                "postgres tables upgraded",
                extra={"fields": {"schema": self.schema, "from": version, "to": SCHEMA_VERSION}},
            )

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection, translating driver errors.

        A connection found dead is retried once on a fresh one: pooled connections
        may predate a server restart.
        """
        await self._ensure_ready()
        for attempt in (1, 2):
            try:
                async with self.pool.acquire(timeout=self.connect_timeout) as conn:
                    return await work(conn)
            except _DRIVER_ERRORS as exc:
                if attempt == 1 and _connection_lost(exc):
                    log.debug("retrying on a new connection after: %s", self._redact(str(exc)))
                    continue
                if isinstance(exc, PostgresError) and exc.sqlstate in ("42P01", "3F000"):
                    # A table or the schema went missing: set up again on the next call.
                    self._ready = False
                raise self._error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self) -> None:
        await self.revision()

    # -- reads ------------------------------------------------------------------------

    async def has(self, resource: Resource, feature: str) -> bool:
        async def work(conn: Connection) -> bool:
            return bool(
                await conn.fetchval(
                    self.sql.has, resource.type, resource.id, feature, timeout=self.command_timeout
                )
            )

        return await self._run(work)

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        # Each distinct question once, as three arrays: one statement, one round trip.
        distinct = list(dict.fromkeys((r.type, r.id, feature) for r, feature in items))
        if not distinct:
            return []

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.check_many,
                [t for t, _, _ in distinct],
                [i for _, i, _ in distinct],
                [f for _, _, f in distinct],
                timeout=self.command_timeout,
            )

        present = {distinct[row[0] - 1] for row in await self._run(work)}
        return [(r.type, r.id, feature) in present for r, feature in items]

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        distinct = list(dict.fromkeys((r.type, r.id) for r in resources))
        if not distinct:
            return []

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.features_of_many,
                [t for t, _ in distinct],
                [i for _, i in distinct],
                timeout=self.command_timeout,
            )

        found: dict[tuple[str, str], list[str]] = {}
        for type_, id_, feature in await self._run(work):
            found.setdefault((type_, id_), []).append(feature)
        return [list(found.get((r.type, r.id), ())) for r in resources]

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        statement = self.sql.resources_with[(type is not None, after is not None)]
        args: list[object] = [feature]
        if type is not None:
            args.append(type)
        if after is not None:
            args += (after.type, after.id)
        args.append(limit)

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(statement, *args, timeout=self.command_timeout)

        return [Resource(t, i) for t, i in await self._run(work)]

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.changes_since, revision, limit, timeout=self.command_timeout
            )

        events = [
            ChangeEvent(rev, op, Resource(t, i), f, at, actor)
            for rev, op, t, i, f, at, actor in await self._run(work)
        ]
        if events and events[0].revision > revision + 1:
            # Revisions are dense, so a hole at the start is a trimmed log.
            raise ChangesTrimmed(revision, events[0].revision)
        return events

    async def revision(self) -> int:
        return await self._run(self._current_revision)

    async def _current_revision(self, conn: Connection) -> int:
        value = await conn.fetchval(self.sql.revision, timeout=self.command_timeout)
        if value is None:
            self._ready = False
            raise StoreUnavailable(
                f"the revision counter {self.tables.revision} is empty; rebuilt on retry"
            )
        return int(value)

    # -- snapshots and feed -------------------------------------------------------------

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        start = after or Assignment("", "", "")

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.snapshot_page,
                start.type,
                start.id,
                start.feature,
                limit,
                timeout=self.command_timeout,
            )

        rows = await self._run(work)
        if not rows:
            self._ready = False
            raise StoreUnavailable(
                f"the revision counter {self.tables.revision} is empty; rebuilt on retry"
            )
        page = [Assignment(t, i, f) for _, t, i, f in rows if t is not None]
        return SnapshotPage(int(rows[0][0]), page)

    async def trim_changes(self, through: int) -> int:
        async def work(conn: Connection) -> str:
            return await conn.execute(self.sql.trim_changes, through, timeout=self.command_timeout)

        status = await self._run(work)  # "DELETE <count>"
        return int(status.rsplit(" ", 1)[-1])

    # -- writes -----------------------------------------------------------------------

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._write("add", resource, feature, actor)

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._write("remove", resource, feature, actor)

    async def _write(
        self, op: ChangeOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        statement = self.sql.add if op == "add" else self.sql.remove

        async def work(conn: Connection) -> WriteResult:
            give_up = time.monotonic() + _CONFLICT_BUDGET_SECONDS
            for attempt in itertools.count(1):
                try:
                    revision = await conn.fetchval(
                        statement,
                        resource.type,
                        resource.id,
                        feature,
                        actor,
                        op,
                        timeout=self.command_timeout,
                    )
                except PostgresError as exc:
                    if exc.sqlstate == "23502":
                        # The counter row is gone (see Statements): nothing was applied.
                        self._ready = False
                        raise StoreUnavailable(
                            f"the revision counter {self.tables.revision} is empty; "
                            "rebuilt on retry"
                        ) from exc
                    if exc.sqlstate not in _CONFLICT_STATES or time.monotonic() > give_up:
                        raise
                    log.debug("%s conflicted (attempt %d, %s); retrying", op, attempt, exc.sqlstate)
                    # Jittered exponential backoff, so writers do not collide in lockstep.
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                    continue
                if revision is not None:
                    return WriteResult(True, int(revision))
                # Nothing changed: the revision now, read with a snapshot of its own.
                return WriteResult(False, await self._current_revision(conn))
            raise AssertionError("unreachable")  # pragma: no cover

        return await self._run(work)


def _agree(option: str, given: str | None, in_url: str | None, default: str) -> str:
    if given is not None and in_url is not None and given != in_url:
        raise ConfigError(
            f"{option} is {given!r} in the options but {in_url!r} in the URL: give it once"
        )
    if given is not None:
        return given
    return in_url if in_url is not None else default


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a set-up failure nobody awaited (every caller may have timed out)."""
    if not future.cancelled():
        future.exception()


# -- plugin ---------------------------------------------------------------------------


def build_store(options: StoreOptions, builder: StoreBuilder) -> Store:
    """The ``postgres`` store from its options (registered by ``postgres_plugin``)."""
    return PostgresStore(
        options.required_str("url"),
        schema=options.get_str("schema"),
        table_prefix=options.get_str("table_prefix"),
        pool_max_size=options.get_int("pool_max_size", DEFAULT_POOL_MAX_SIZE, minimum=1),
        connect_timeout_ms=options.get_int(
            "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS, minimum=1
        ),
        command_timeout_ms=options.get_int(
            "command_timeout_ms", DEFAULT_COMMAND_TIMEOUT_MS, minimum=1
        ),
        statement_cache_size=options.get_int("statement_cache_size", 100, minimum=0),
    )
