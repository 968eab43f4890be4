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
``features``, ``resources``, ``resource_types`` (layout version 2)
    The catalog (one row per feature that is defined or assigned: its definition and
    its number of resources), and the number of features of each resource and of
    resources of each type. Statement-level triggers on ``assignments`` keep the counts,
    whatever statement changes it, with row locks (``INSERT ... ON CONFLICT DO UPDATE``)
    that make concurrent writers count right. ``changes`` has an index per history
    filter: ``(resource_type, resource_id, revision)``, ``(feature, revision)`` and
    ``(actor, revision)``.

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

Bulk writes (``add_many``, ``remove_many``, ``set_features``) are one statement each
too: the items travel as arrays, each item that changes is numbered in the order given,
and the counter moves by their number in one update. Strict mode's check (the features
must be defined) reads the catalog as of the statement's start: an archive committed by
another writer at that very moment may take the revision just before the write.
Definitions and archives lock the revision row first, then change the catalog row.

Pushed changes
--------------
A statement-level trigger on ``changes`` (``<prefix>changes_notify``, installed at set-up
when missing, beside the layout rather than in it: older versions of the store ignore it,
and their writes notify too) calls ``pg_notify`` with the statement's latest revision, and
``catalog`` when it holds a define or archive. :meth:`PostgresStore.watch` keeps one
pooled connection listening on that channel (reconnecting with backoff, and telling its
listener to catch up after each reconnection), so the change feed, the catalog view and
replicas in every process sharing the database wake when a change commits instead of at
their next poll. Notices are delivered at commit, in commit order; a role that may not
create the trigger leaves the store without them (a warning says so) and readers poll.

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
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
from asyncpg.exceptions import InterfaceError, PostgresError

from features_gql.domain import (
    Assignment,
    BulkResult,
    ChangeEvent,
    ChangeOp,
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
from features_gql.errors import (
    ConfigError,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.stores import Store, StoreBuilder, StoreOptions, check_not_trimmed, redact_url
from features_gql.stores.network import (
    STOP_SECONDS,
    PushedChanges,
    PushingStore,
    SetUpOnce,
    retry_conflicts,
)

log = logging.getLogger("features_gql.stores.postgres")

T = TypeVar("T")
if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[Any]
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[Any]

#: The version of the table layout this code writes. Each version has a migration below.
SCHEMA_VERSION = 2
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
#: Seconds between two probes of the listening connection (a half-open one is found by
#: the probe's timeout).
LISTEN_PROBE_SECONDS = 10.0


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


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
        # catalog, listings, history and bulk (layout version 2)
        self.features = self.qualified("features")
        self.resources = self.qualified("resources")
        self.resource_types = self.qualified("resource_types")
        self.added_function = self.qualified("assignments_added")
        self.removed_function = self.qualified("assignments_removed")

    def index(self, name: str) -> str:
        return _ident(f"{self.prefix}{name}")

    @property
    def channel(self) -> str:
        """The channel of pushed notices: one per schema and prefix, within 63 bytes."""
        name = f"{self.schema}.{self.prefix}changes"
        if len(name) > 63:
            name = "features_gql_" + hashlib.sha256(name.encode()).hexdigest()[:32]
        return name

    def notices(self) -> list[str]:
        """The trigger that notifies the channel of every statement's changes."""
        function = self.qualified("changes_notify")
        return [
            f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify({_literal(self.channel)}, (
                        SELECT max(revision)::text
                            || CASE WHEN bool_or(op IN ('define', 'archive'))
                                    THEN ' catalog' ELSE '' END
                        FROM new_rows));
                    RETURN NULL;
                END $$""",
            f"""CREATE TRIGGER {self.index("changes_notify")}
                AFTER INSERT ON {self.changes} REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE PROCEDURE {function}()""",
        ]

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
            2: self._catalog_migration(),
        }

    def _catalog_migration(self) -> list[str]:
        """Version 2: catalog changes in the log, history indexes, the catalog and counts."""
        text = 'text COLLATE "C" NOT NULL'
        f, r, t = self.features, self.resources, self.resource_types
        return [
            f"ALTER TABLE {self.changes} DROP CONSTRAINT {self.index('changes_op_check')}",
            f"""ALTER TABLE {self.changes}
                ADD CONSTRAINT {self.index("changes_op_check")}
                    CHECK (op IN ('add', 'remove', 'define', 'archive')),
                ALTER COLUMN resource_type DROP NOT NULL,
                ALTER COLUMN resource_id DROP NOT NULL""",
            f"""CREATE INDEX {self.index("changes_by_resource")}
                ON {self.changes} (resource_type, resource_id, revision)""",
            f"""CREATE INDEX {self.index("changes_by_feature")}
                ON {self.changes} (feature, revision)""",
            f"""CREATE INDEX {self.index("changes_by_actor")}
                ON {self.changes} (actor, revision)""",
            f"""CREATE TABLE {f} (
                name           {text} PRIMARY KEY,
                resource_count bigint NOT NULL DEFAULT 0,
                defined        boolean NOT NULL DEFAULT false,
                description    text,
                owner          text,
                kind           text,
                expires_at     timestamptz,
                created_at     timestamptz,
                updated_at     timestamptz,
                archived_at    timestamptz,
                search_text    text
            )""",
            f"CREATE INDEX {self.index('features_by_kind')} ON {f} (kind, name)",
            f"CREATE INDEX {self.index('features_by_expiry')} ON {f} (expires_at)",
            f"""CREATE TABLE {r} (
                resource_type {text},
                resource_id   {text},
                feature_count bigint NOT NULL,
                PRIMARY KEY (resource_type, resource_id)
            )""",
            f"""CREATE TABLE {t} (
                name           {text} PRIMARY KEY,
                resource_count bigint NOT NULL
            )""",
            f"""INSERT INTO {f} (name, resource_count)
                SELECT feature, count(*) FROM {self.assignments} GROUP BY feature""",
            f"""INSERT INTO {r} (resource_type, resource_id, feature_count)
                SELECT resource_type, resource_id, count(*) FROM {self.assignments}
                GROUP BY 1, 2""",
            f"""INSERT INTO {t} (name, resource_count)
                SELECT resource_type, count(*) FROM {r} GROUP BY 1""",
            # The counts follow every statement on assignments. Upserts lock the rows they
            # count, so concurrent writers wait for each other instead of miscounting.
            f"""CREATE FUNCTION {self.added_function}() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF NOT EXISTS (SELECT FROM added) THEN RETURN NULL; END IF;
                INSERT INTO {f} AS x (name, resource_count)
                    SELECT feature, count(*) FROM added GROUP BY feature ORDER BY feature
                    ON CONFLICT (name)
                    DO UPDATE SET resource_count = x.resource_count + excluded.resource_count;
                WITH delta AS (
                    SELECT resource_type, resource_id, count(*) AS n FROM added GROUP BY 1, 2
                ), grown AS (
                    INSERT INTO {r} AS x (resource_type, resource_id, feature_count)
                    SELECT resource_type, resource_id, n FROM delta ORDER BY 1, 2
                    ON CONFLICT (resource_type, resource_id)
                    DO UPDATE SET feature_count = x.feature_count + excluded.feature_count
                    RETURNING x.resource_type, x.resource_id, x.feature_count
                )
                INSERT INTO {t} AS x (name, resource_count)
                    SELECT g.resource_type, count(*) FROM grown g
                    JOIN delta d USING (resource_type, resource_id)
                    WHERE g.feature_count = d.n  -- it had none before: a new resource
                    GROUP BY 1 ORDER BY 1
                    ON CONFLICT (name)
                    DO UPDATE SET resource_count = x.resource_count + excluded.resource_count;
                RETURN NULL;
            END
            $body$""",
            f"""CREATE FUNCTION {self.removed_function}() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF NOT EXISTS (SELECT FROM removed) THEN RETURN NULL; END IF;
                UPDATE {f} AS x SET resource_count = x.resource_count - d.n
                    FROM (SELECT feature, count(*) AS n FROM removed GROUP BY 1) d
                    WHERE x.name = d.feature;
                DELETE FROM {f} AS x USING (SELECT DISTINCT feature FROM removed) d
                    WHERE x.name = d.feature AND x.resource_count <= 0 AND NOT x.defined;
                UPDATE {r} AS x SET feature_count = x.feature_count - d.n
                    FROM (SELECT resource_type, resource_id, count(*) AS n FROM removed
                          GROUP BY 1, 2) d
                    WHERE (x.resource_type, x.resource_id) = (d.resource_type, d.resource_id);
                WITH emptied AS (
                    DELETE FROM {r} AS x
                    USING (SELECT DISTINCT resource_type, resource_id FROM removed) d
                    WHERE (x.resource_type, x.resource_id) = (d.resource_type, d.resource_id)
                      AND x.feature_count <= 0
                    RETURNING x.resource_type
                )
                UPDATE {t} AS x SET resource_count = x.resource_count - e.n
                    FROM (SELECT resource_type, count(*) AS n FROM emptied GROUP BY 1) e
                    WHERE x.name = e.resource_type;
                DELETE FROM {t} AS x USING (SELECT DISTINCT resource_type FROM removed) d
                    WHERE x.name = d.resource_type AND x.resource_count <= 0;
                RETURN NULL;
            END
            $body$""",
            f"""CREATE TRIGGER {self.index("assignments_added")}
                AFTER INSERT ON {self.assignments}
                REFERENCING NEW TABLE AS added
                FOR EACH STATEMENT EXECUTE FUNCTION {self.added_function}()""",
            f"""CREATE TRIGGER {self.index("assignments_removed")}
                AFTER DELETE ON {self.assignments}
                REFERENCING OLD TABLE AS removed
                FOR EACH STATEMENT EXECUTE FUNCTION {self.removed_function}()""",
        ]


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
        self._catalog(t)

    def _catalog(self, t: Tables) -> None:
        """catalog, listings, history and bulk"""
        self.feature_columns = (
            "name, resource_count, defined, description, owner, kind, expires_at, "
            "created_at, updated_at, archived_at"
        )
        self.feature_infos = (
            f"SELECT {self.feature_columns} FROM {t.features} WHERE name = ANY($1::text[])"
        )
        self.resource_types = f"""
            SELECT name, resource_count FROM {t.resource_types}
            WHERE name > $1 ORDER BY name LIMIT $2"""
        self.resource_count = f"SELECT resource_count FROM {t.resource_types} WHERE name = $1"
        self.list_resources = f"""
            SELECT resource_id FROM {t.resources}
            WHERE resource_type = $1 AND resource_id > $2 ORDER BY resource_id LIMIT $3"""
        # Define and archive: the revision row first (it serialises every write that
        # logs), then the feature's row as it is.
        self.lock_for_definition = f"""
            SELECT r.revision, {", ".join("f." + c for c in self.feature_columns.split(", "))}
            FROM {t.revision} r LEFT JOIN {t.features} f ON f.name = $1
            WHERE r.only_row FOR UPDATE OF r"""
        self.store_definition = f"""
            WITH stored AS (
                INSERT INTO {t.features} AS x (name, defined, description, owner, kind,
                    expires_at, created_at, updated_at, archived_at, search_text)
                VALUES ($1, true, $2, $3, $4, $5, $6, $7, $8, $9)
                ON CONFLICT (name) DO UPDATE SET defined = true,
                    description = excluded.description, owner = excluded.owner,
                    kind = excluded.kind, expires_at = excluded.expires_at,
                    created_at = excluded.created_at, updated_at = excluded.updated_at,
                    archived_at = excluded.archived_at, search_text = excluded.search_text
                RETURNING resource_count
            ), counted AS (
                UPDATE {t.revision} SET revision = revision + 1 WHERE only_row RETURNING revision
            ), logged AS (
                INSERT INTO {t.changes} (revision, op, resource_type, resource_id, feature, at,
                    actor)
                SELECT revision, $10, NULL, NULL, $1, $7, $11 FROM counted
            )
            SELECT (SELECT revision FROM counted), (SELECT resource_count FROM stored)"""
        # Bulk writes. Each item that changes gets the next revision in the order given:
        # revision = (counter after the update) - (changes) + (its rank among them).
        # Were the counter row missing, that revision would be NULL and the NOT NULL
        # constraint would roll everything back rather than leave changes unlogged.
        items = """
            input AS (
                SELECT DISTINCT ON (t, i, f) t, i, f, n
                FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u (t, i, f, n)
                ORDER BY t, i, f, n
            )"""
        live = f"""SELECT FROM {t.features} x WHERE x.name = wanted.f AND x.defined
                       AND x.archived_at IS NULL"""
        numbered_log = f"""
            counted AS (
                UPDATE {t.revision} SET revision = revision + (SELECT count(*) FROM numbered)
                WHERE only_row AND EXISTS (SELECT FROM numbered) RETURNING revision
            ),
            logged AS (
                INSERT INTO {t.changes} (revision, op, resource_type, resource_id, feature, at,
                    actor)
                SELECT (SELECT revision FROM counted) - total + k, op, t, i, f,
                       clock_timestamp(), $4::text
                FROM numbered
            )"""
        self.add_many = f"""
            WITH {items},
            refused AS (
                SELECT DISTINCT f FROM input AS wanted WHERE $5 AND NOT EXISTS ({live})
            ),
            applied AS (
                INSERT INTO {t.assignments} (resource_type, resource_id, feature, added_by)
                SELECT t, i, f, $4::text FROM input WHERE NOT EXISTS (SELECT FROM refused)
                ORDER BY t, i, f
                ON CONFLICT DO NOTHING
                RETURNING resource_type, resource_id, feature
            ),
            numbered AS (
                SELECT 'add'::text AS op, t, i, f, n,
                       row_number() OVER (ORDER BY n) AS k, count(*) OVER () AS total
                FROM applied JOIN input ON (input.t, input.i, input.f)
                    = (applied.resource_type, applied.resource_id, applied.feature)
            ), {numbered_log}
            SELECT n, (SELECT revision FROM counted) - total + k AS revision, NULL::text AS refused
            FROM numbered
            UNION ALL SELECT NULL, NULL, f FROM refused"""
        self.remove_many = f"""
            WITH {items},
            applied AS (
                DELETE FROM {t.assignments} a USING input
                WHERE (a.resource_type, a.resource_id, a.feature) = (input.t, input.i, input.f)
                RETURNING input.t, input.i, input.f, input.n
            ),
            numbered AS (
                SELECT 'remove'::text AS op, t, i, f, n,
                       row_number() OVER (ORDER BY n) AS k, count(*) OVER () AS total
                FROM applied
            ), {numbered_log}
            SELECT n, (SELECT revision FROM counted) - total + k AS revision, NULL::text AS refused
            FROM numbered"""
        self.set_features = f"""
            WITH wanted AS (SELECT DISTINCT unnest($3::text[]) AS f),
            refused AS (SELECT f FROM wanted WHERE $5 AND NOT EXISTS ({live})),
            removed AS (
                DELETE FROM {t.assignments}
                WHERE resource_type = $1 AND resource_id = $2 AND feature <> ALL ($3::text[])
                  AND NOT EXISTS (SELECT FROM refused)
                RETURNING feature
            ),
            added AS (
                INSERT INTO {t.assignments} (resource_type, resource_id, feature, added_by)
                SELECT $1, $2, f, $4::text FROM wanted WHERE NOT EXISTS (SELECT FROM refused)
                ORDER BY f
                ON CONFLICT DO NOTHING
                RETURNING feature
            ),
            numbered AS (
                SELECT op, $1::text AS t, $2::text AS i, f,
                       row_number() OVER (ORDER BY op DESC, f) AS k, count(*) OVER () AS total
                FROM (SELECT 'remove'::text AS op, feature AS f FROM removed
                      UNION ALL SELECT 'add', feature FROM added) AS c
            ), {numbered_log}
            SELECT op, f, NULL::text AS refused FROM numbered
            UNION ALL SELECT NULL, NULL, f FROM refused"""


async def _keep_session(connection: asyncpg.Connection[Any]) -> None:
    """Pool reset for the store's own pool. The store never changes session state, so
    there is nothing to undo but a transaction left open, which a local flag tells: this
    saves asyncpg's default reset query, a round trip per call."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class PostgresStore(PushingStore):
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
        self._setup = SetUpOnce(self._set_up)
        #: What the server said about itself at set-up.
        self.server_info: dict[str, Any] = {}
        #: Whether the trigger that pushes notices is in place (None: not known yet).
        self._notifies: bool | None = None
        self.pushed = PushedChanges(
            self._listen,
            name="features-gql-postgres-listen",
            what="listening for pushed changes",
            logger=log,
            redact=self._redact,
        )

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
        await self.pushed.stop()
        pool, self._pool = self._pool, None
        self._setup.cancel()
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
        try:
            await self._setup()
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
                await self._install_notices(conn)
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

    async def _install_notices(self, conn: Connection) -> None:
        """Install the trigger that pushes notices, unless it is there (see the module)."""
        name = f"{self.table_prefix}changes_notify"
        exists = (
            "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2)"
        )
        if await conn.fetchval(exists, self.tables.changes, name):
            self._notifies = True
            return
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"features-gql {self.schema}.{self.table_prefix}",
                )
                if not await conn.fetchval(exists, self.tables.changes, name):
                    for statement in self.tables.notices():
                        await conn.execute(statement)
            self._notifies = True
        except PostgresError as exc:
            # Typically a role that does not own the tables: readers poll instead.
            log.warning(
                "cannot install the trigger that pushes changes (%s); readers of the change "
                "log poll it instead",
                self._redact(str(exc)),
            )
            self._notifies = False

    # -- pushed changes -----------------------------------------------------------------

    async def _listen(
        self, opened: Callable[[int], None], changed: Callable[[int, bool], None]
    ) -> None:
        """Keep one pooled connection listening on the channel, and tell ``changed`` of
        every notice (see :class:`PushedChanges`). A half-open connection is found by a
        probe every LISTEN_PROBE_SECONDS."""

        def notice(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            revision, _, kind = str(payload).partition(" ")
            if revision.isdigit():
                changed(int(revision), kind == "catalog")

        await self._ensure_ready()
        if not self._notifies:
            return  # the trigger could not be installed: readers poll
        async with self.pool.acquire(timeout=self.connect_timeout) as conn:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(self.tables.channel, notice)
            try:
                opened(await self._current_revision(conn))
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LISTEN_PROBE_SECONDS):
                            await lost.wait()
                    if lost.is_set():
                        raise StoreUnavailable("the server closed the connection")
                    await conn.fetchval("SELECT 1", timeout=self.command_timeout)
            finally:
                # The connection goes back to the pool: it must stop listening, within a
                # deadline (cancelled, or a server gone quiet); one that cannot is closed.
                if not conn.is_closed():
                    try:
                        async with asyncio.timeout(STOP_SECONDS):
                            await conn.remove_listener(self.tables.channel, notice)
                    except (Exception, asyncio.CancelledError):
                        conn.terminate()

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
                    self._setup.again()
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

        events = [_event(tuple(row)) for row in await self._run(work)]
        check_not_trimmed(revision, events[0].revision if events else None)
        return events

    async def revision(self) -> int:
        return await self._run(self._current_revision)

    async def _current_revision(self, conn: Connection) -> int:
        value = await conn.fetchval(self.sql.revision, timeout=self.command_timeout)
        if value is None:
            raise self._counter_gone()
        return int(value)

    def _counter_gone(self) -> StoreUnavailable:
        """The revision counter's row is gone (deleted behind the store's back): set up
        again, which rebuilds it from the change log, on the next call."""
        self._setup.again()
        return StoreUnavailable(
            f"the revision counter {self.tables.revision} is empty; rebuilt on retry"
        )

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
            raise self._counter_gone()
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
            revision = await self._modify(
                op,
                lambda: conn.fetchval(
                    statement,
                    resource.type,
                    resource.id,
                    feature,
                    actor,
                    op,
                    timeout=self.command_timeout,
                ),
            )
            if revision is not None:
                return WriteResult(True, int(revision))
            # Nothing changed: the revision now, read with a snapshot of its own.
            return WriteResult(False, await self._current_revision(conn))

        return await self._run(work)

    # -- catalog, listings, history and bulk ------------------------------------------

    supports_catalog = True

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.define(spec), actor)

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.archive(name), actor)

    async def _definition_write(
        self, write: DefinitionChange, actor: str | None
    ) -> DefinitionResult:
        name = write.name

        async def work(conn: Connection) -> DefinitionResult:
            async with conn.transaction():
                row = await conn.fetchrow(
                    self.sql.lock_for_definition, name, timeout=self.command_timeout
                )
                if row is None:
                    raise self._counter_gone()
                current = FeatureInfo(name) if row[1] is None else _info(tuple(row)[1:])
                now = await conn.fetchval("SELECT clock_timestamp()")
                wanted = write.change(current.definition, now)
                if wanted is None:
                    return DefinitionResult(False, int(row[0]), current)
                stored = await conn.fetchrow(
                    self.sql.store_definition,
                    name,
                    wanted.description,
                    wanted.owner,
                    wanted.kind,
                    wanted.expires_at,
                    wanted.created_at,
                    wanted.updated_at,
                    wanted.archived_at,
                    f"{name}\n{(wanted.description or '').lower()}",
                    write.op,
                    actor,
                    timeout=self.command_timeout,
                )
                assert stored is not None  # the statement always answers one row
                revision, count = stored
                return DefinitionResult(True, int(revision), FeatureInfo(name, int(count), wanted))

        return await self._run(work)

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        unique = list(dict.fromkeys(names))

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(self.sql.feature_infos, unique, timeout=self.command_timeout)

        found = {row[0]: _info(tuple(row)) for row in await self._run(work)}
        return [found.get(name) or FeatureInfo(name) for name in names]

    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        args: list[object] = ["" if after is None else after]
        where = ["name > $1"]

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if filter.kind is not None:
            where.append(f"kind = {arg(filter.kind)}")
        if filter.defined is not None:
            where.append(f"defined = {arg(filter.defined)}")
        if filter.archived is not None:
            where.append("archived_at IS NOT NULL" if filter.archived else "archived_at IS NULL")
        if filter.expired is True:
            where.append(f"expires_at <= {arg(filter.now)}")
        elif filter.expired is False:
            where.append(f"(expires_at IS NULL OR expires_at > {arg(filter.now)})")
        if filter.search is not None:
            where.append(f"strpos(coalesce(search_text, name), {arg(filter.search)}) > 0")
        statement = (
            f"SELECT {self.sql.feature_columns} FROM {self.tables.features} "
            f"WHERE {' AND '.join(where)} ORDER BY name LIMIT {arg(limit)}"
        )

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(statement, *args, timeout=self.command_timeout)

        return [_info(tuple(row)) for row in await self._run(work)]

    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.resource_types, after or "", limit, timeout=self.command_timeout
            )

        return [ResourceTypeCount(name, int(count)) for name, count in await self._run(work)]

    async def resource_count(self, type: str) -> int:
        async def work(conn: Connection) -> Any:
            return await conn.fetchval(self.sql.resource_count, type, timeout=self.command_timeout)

        return int(await self._run(work) or 0)

    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(
                self.sql.list_resources, type, after or "", limit, timeout=self.command_timeout
            )

        return [Resource(type, id_) for (id_,) in await self._run(work)]

    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        args: list[object] = []
        where: list[str] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.resource is not None:
            where.append(
                f"resource_type = {arg(query.resource.type)} "
                f"AND resource_id = {arg(query.resource.id)}"
            )
        if query.feature is not None:
            where.append(f"feature = {arg(query.feature)}")
        if query.actor is not None:
            where.append(f"actor = {arg(query.actor)}")
        if before is not None:
            where.append(f"revision < {arg(before)}")
        statement = (
            "SELECT revision, op, resource_type, resource_id, feature, at, actor "
            f"FROM {self.tables.changes}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY revision DESC LIMIT {arg(limit)}"
        )

        async def work(conn: Connection) -> list[Any]:
            return await conn.fetch(statement, *args, timeout=self.command_timeout)

        return [_event(tuple(row)) for row in await self._run(work)]

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        return await self._bulk(self.sql.add_many, "add_many", items, actor, require_defined)

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        return await self._bulk(self.sql.remove_many, "remove_many", items, actor, None)

    async def _bulk(
        self,
        statement: str,
        op: str,
        items: Sequence[tuple[Resource, str]],
        actor: str | None,
        require_defined: bool | None,
    ) -> BulkResult:
        args: list[object] = [
            [r.type for r, _ in items],
            [r.id for r, _ in items],
            [f for _, f in items],
            actor,
        ]
        if require_defined is not None:
            args.append(require_defined)

        async def work(conn: Connection) -> BulkResult:
            rows = await self._modify(
                op, lambda: conn.fetch(statement, *args, timeout=self.command_timeout)
            )
            refused = sorted(row[2] for row in rows if row[2] is not None)
            revisions: list[int | None] = [None] * len(items)
            for n, revision, _ in rows:
                if n is not None:
                    revisions[n - 1] = int(revision)
            changed = [r for r in revisions if r is not None]
            latest = max(changed) if changed else await self._current_revision(conn)
            return BulkResult(revisions, latest, refused)

        return await self._run(work)

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        async def work(conn: Connection) -> SetResult:
            rows = await self._modify(
                "set_features",
                lambda: conn.fetch(
                    self.sql.set_features,
                    resource.type,
                    resource.id,
                    list(features),
                    actor,
                    require_defined,
                    timeout=self.command_timeout,
                ),
            )
            refused = sorted(row[2] for row in rows if row[2] is not None)
            removed = sorted(row[1] for row in rows if row[0] == "remove")
            added = sorted(row[1] for row in rows if row[0] == "add")
            return SetResult(removed, added, await self._current_revision(conn), refused)

        return await self._run(work)

    async def _modify(self, op: str, statement: Callable[[], Awaitable[T]]) -> T:
        """Run a write statement, retrying serialisation failures within the budget."""

        async def attempt() -> T:
            try:
                return await statement()
            except PostgresError as exc:
                if exc.sqlstate == "23502":
                    # The counter row is gone (see Statements): nothing was applied.
                    raise self._counter_gone() from exc
                raise

        return await retry_conflicts(
            op, attempt, conflict=_conflict, budget=_CONFLICT_BUDGET_SECONDS, logger=log
        )


def _agree(option: str, given: str | None, in_url: str | None, default: str) -> str:
    if given is not None and in_url is not None and given != in_url:
        raise ConfigError(
            f"{option} is {given!r} in the options but {in_url!r} in the URL: give it once"
        )
    if given is not None:
        return given
    return in_url if in_url is not None else default


def _event(row: tuple[Any, ...]) -> ChangeEvent:
    revision, op, type_, id_, feature, at, actor = row
    return ChangeEvent(
        revision, op, None if type_ is None else Resource(type_, id_), feature, at, actor
    )


def _info(row: tuple[Any, ...]) -> FeatureInfo:
    name, count, defined, description, owner, kind, expires, created, updated, gone = row
    definition = None
    if defined:
        definition = FeatureDefinition(
            created_at=created,
            updated_at=updated,
            description=description,
            owner=owner,
            kind=cast(FeatureKind | None, kind),
            expires_at=expires,
            archived_at=gone,
        )
    return FeatureInfo(name, int(count), definition)


def _conflict(exc: Exception, attempts: int) -> str | None:
    """The SQLSTATE of a serialisation failure or deadlock, worth another attempt."""
    if isinstance(exc, PostgresError) and exc.sqlstate in _CONFLICT_STATES:
        return str(exc.sqlstate)
    return None


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
