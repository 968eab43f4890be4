"""The postgres store against a real PostgreSQL server.

The server (or ``POSTGRES_URL``) comes from ``tests/postgres_server.py``; every test has
a schema of its own. The tests that stop and restart a server start their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psycopg
import pytest
from psycopg import sql

import tests.test_graphql_http as http_tests
import tests.test_mongodb_store as mongodb_tests
from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.domain import FeatureSpec, HistoryQuery, Resource, ResourceTypeCount
from features_gql.errors import (
    ConfigError,
    StoreConflict,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.stores import Store
from features_gql.testing import NetworkStoreContract, OutageServer, StoreContract
from features_gql_plugins.postgres_store import (
    SCHEMA_VERSION,
    IncompatibleDatabase,
    PostgresStore,
    Tables,
    redact,
    split_url,
    translate_error,
)
from tests.conftest import StartServer
from tests.postgres_server import LocalPostgres, with_schema
from tests.test_cli import CLI, Serving, clean_env, post

ROOT = Path(__file__).resolve().parent.parent
#: Short driver timeouts for the tests that take the server away.
FAST_FAILURE = {"connect_timeout_ms": 400, "command_timeout_ms": 1000}
RESOURCE = {"type": "pipeline", "id": "db8e9a0d"}
FEATURES = '{ resource(type: "pipeline", id: "db8e9a0d") { features } }'


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the contract ---------------------------------------------------------------------


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, postgres_url: str, postgres_schema: str) -> Callable[[], Store]:
        return lambda: PostgresStore(postgres_url, schema=postgres_schema)


@pytest.mark.slow
class TestPostgresStoreOutages(NetworkStoreContract):
    """The database goes away and comes back (a server of the test's own)."""

    @pytest.fixture
    def outage_server(self, own_postgres: LocalPostgres) -> OutageServer:
        url = own_postgres.url
        return OutageServer(
            own_postgres.start,
            own_postgres.stop,
            lambda: PostgresStore(url, **FAST_FAILURE),
            secrets=[own_postgres.password],
        )


class TestPostgresStoreWithTablePrefix(StoreContract):
    """Tables beside the application's own, in a schema shared with them."""

    @pytest.fixture
    def make_store(self, postgres_url: str, postgres_schema: str) -> Callable[[], Store]:
        return lambda: PostgresStore(
            with_schema(postgres_url, postgres_schema), table_prefix="ff_", pool_max_size=2
        )


# -- layout and versions ----------------------------------------------------------------


def tables(admin: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    )
    return [name for (name,) in rows]


def test_layout_indexes_and_prefix(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    admin = postgres_admin
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
    admin.execute(sql.SQL("CREATE TABLE {}.users (id int)").format(sql.Identifier(postgres_schema)))

    async def scenario() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema, table_prefix="ff_")
        await store.open()
        try:
            await store.add(Resource("app", "1"), "beta", actor="alice")
        finally:
            await store.close()

    run(scenario())
    assert tables(admin, postgres_schema) == [
        "ff_assignments",
        "ff_changes",
        "ff_features",
        "ff_resource_types",
        "ff_resources",
        "ff_revision",
        "ff_schema_version",
        "users",
    ]
    indexes = dict(
        admin.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s",
            (postgres_schema,),
        ).fetchall()
    )
    assert "(resource_type, resource_id, feature)" in indexes["ff_assignments_pkey"]
    assert "(feature, resource_type, resource_id)" in indexes["ff_assignments_by_feature"]
    assert "(revision)" in indexes["ff_changes_pkey"]
    # History is served by an index per filter, each in revision order.
    assert "(resource_type, resource_id, revision)" in indexes["ff_changes_by_resource"]
    assert "(feature, revision)" in indexes["ff_changes_by_feature"]
    assert "(actor, revision)" in indexes["ff_changes_by_actor"]
    assert "(resource_type, resource_id)" in indexes["ff_resources_pkey"]
    assert "(kind, name)" in indexes["ff_features_by_kind"]
    schema = sql.Identifier(postgres_schema)
    (row,) = admin.execute(
        sql.SQL("SELECT resource_type, resource_id, feature, added_by FROM {}.ff_assignments")
        .format(schema)
    ).fetchall()  # fmt: skip
    assert row == ("app", "1", "beta", "alice")
    (change,) = admin.execute(
        sql.SQL("SELECT revision, op, resource_type, resource_id, feature, actor, at "
                "FROM {}.ff_changes").format(schema)
    ).fetchall()  # fmt: skip
    assert change[:6] == (1, "add", "app", "1", "beta", "alice")
    assert isinstance(change[6], datetime)
    assert admin.execute(sql.SQL("SELECT * FROM {}.ff_revision").format(schema)).fetchall() == [
        (True, 1)
    ]
    assert admin.execute(
        sql.SQL("SELECT version FROM {}.ff_schema_version").format(schema)
    ).fetchall() == [(SCHEMA_VERSION,)]


def test_a_newer_layout_is_refused_with_a_clear_error(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    async def open_store() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema)
        try:
            await store.open()
        finally:
            await store.close()

    run(open_store())
    postgres_admin.execute(
        sql.SQL("UPDATE {}.schema_version SET version = version + 1").format(
            sql.Identifier(postgres_schema)
        )
    )
    newer = rf"newer features-gql \(layout version {SCHEMA_VERSION + 1}"
    with pytest.raises(IncompatibleDatabase, match=newer):
        run(open_store())
    # The service refuses to start, with the message and no traceback.
    result = subprocess.run(
        [*CLI, "serve", "--port", "0", "--store", with_schema(postgres_url, postgres_schema)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 2, result.stderr
    assert "written by a newer features-gql" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_version_1_layout_is_upgraded_with_its_counts_and_revisions(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Tables written by the first release: the upgrade keeps the log and counts what is there."""
    admin = postgres_admin
    schema = sql.Identifier(postgres_schema)
    layout = Tables(postgres_schema, "")
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    admin.execute(
        sql.SQL(
            "CREATE TABLE {}.schema_version (only_row boolean PRIMARY KEY DEFAULT true "
            "CHECK (only_row), version integer NOT NULL, upgraded_at timestamptz NOT NULL "
            "DEFAULT now())"
        ).format(schema)
    )
    for statement in layout.migrations()[1]:
        admin.execute(statement.encode())
    admin.execute(sql.SQL("INSERT INTO {}.schema_version (version) VALUES (1)").format(schema))
    for revision, (type_, id_, feature) in enumerate(
        [("app", "a", "f"), ("app", "a", "g"), ("app", "b", "f"), ("repo", "x", "f")], start=1
    ):
        admin.execute(
            sql.SQL("INSERT INTO {}.assignments (resource_type, resource_id, feature) "
                    "VALUES (%s, %s, %s)").format(schema), (type_, id_, feature)
        )  # fmt: skip
        admin.execute(
            sql.SQL("INSERT INTO {}.changes VALUES (%s, 'add', %s, %s, %s, now(), NULL)")
            .format(schema), (revision, type_, id_, feature)
        )  # fmt: skip
    admin.execute(sql.SQL("UPDATE {}.revision SET revision = 4").format(schema))

    async def scenario() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema)
        await store.open()
        try:
            infos = await store.feature_infos(["f", "g"])
            assert [i.resource_count for i in infos] == [3, 1]
            assert await store.resource_types(after=None, limit=10) == [
                ResourceTypeCount("app", 2),
                ResourceTypeCount("repo", 1),
            ]
            assert (await store.define(FeatureSpec("f"), actor=None)).revision == 5
            removed = await store.remove_many([(Resource("repo", "x"), "f")], actor=None)
            assert removed.revisions == [6]
            assert await store.resource_count("repo") == 0
            history = await store.history(HistoryQuery(feature="f"), before=None, limit=10)
            assert [e.revision for e in history] == [6, 5, 4, 3, 1]
        finally:
            await store.close()

    run(scenario())
    assert admin.execute(
        sql.SQL("SELECT version FROM {}.schema_version").format(schema)
    ).fetchall() == [(SCHEMA_VERSION,)]


def test_instances_starting_together_create_the_tables_once(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        stores = [PostgresStore(postgres_url, schema=postgres_schema) for _ in range(6)]
        await asyncio.gather(*(store.open() for store in stores))
        try:
            results = await asyncio.gather(
                *(s.add(Resource("app", str(n)), "f", actor=None) for n, s in enumerate(stores))
            )
            assert sorted(r.revision for r in results) == list(range(1, 7))
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    run(scenario())
    assert len(tables(postgres_admin, postgres_schema)) == 7


def test_serving_needs_only_data_privileges_once_the_tables_exist(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Tables made by an owner role; the service runs as a role that may only use them."""
    role = f"{postgres_schema}_app"
    schema = sql.Identifier(postgres_schema)
    run(_open_and_close(PostgresStore(postgres_url, schema=postgres_schema)))
    admin = postgres_admin
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'app-pw'").format(sql.Identifier(role)))
    try:
        admin.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(role))
        )
        admin.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}")
            .format(schema, sql.Identifier(role))
        )  # fmt: skip
        _, _, host = postgres_url.split("://", 1)[1].rpartition("@")
        url = f"postgresql://{role}:app-pw@{host}"

        async def scenario() -> None:
            store = PostgresStore(url, schema=postgres_schema)
            await store.open()
            try:
                assert (await store.add(Resource("app", "1"), "f", actor=None)).revision == 1
                assert await store.has(Resource("app", "1"), "f") is True
            finally:
                await store.close()

        run(scenario())
    finally:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def _open_and_close(store: PostgresStore) -> None:
    await store.open()
    await store.close()


def test_counter_is_rebuilt_from_the_change_log(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    revision_table = sql.SQL("{}.revision").format(sql.Identifier(postgres_schema))

    async def scenario() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema)
        await store.open()
        try:
            for i in range(3):
                await store.add(Resource("app", "x"), f"f{i}", actor=None)
            postgres_admin.execute(sql.SQL("DELETE FROM {}").format(revision_table))
            # A write that cannot take a revision must not happen unlogged.
            with pytest.raises(StoreUnavailable, match="revision counter"):
                await store.add(Resource("app", "x"), "lost", actor=None)
            assert await store.has(Resource("app", "x"), "lost") is False
            # The next call sets up again, rebuilding the counter from the change log.
            assert (await store.add(Resource("app", "x"), "more", actor=None)).revision == 4
            assert [c.revision for c in await store.changes_since(0, limit=10)] == [1, 2, 3, 4]
        finally:
            await store.close()

    run(scenario())


def test_tables_dropped_behind_its_back_are_recreated(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema)
        await store.open()
        try:
            await store.add(Resource("app", "x"), "f", actor=None)
            postgres_admin.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(postgres_schema))
            )
            with pytest.raises(StoreUnavailable):
                await store.has(Resource("app", "x"), "f")
            assert await store.has(Resource("app", "x"), "f") is False
            assert (await store.add(Resource("app", "x"), "f", actor=None)).revision == 1
        finally:
            await store.close()

    run(scenario())


def test_connections_the_server_ended_are_replaced_without_failing_a_call(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Pooled connections ended by the server (a restart, a failover, an administrator)
    cost no failed call: each is found dead and the call retried on a new one."""

    async def scenario() -> None:
        store = PostgresStore(postgres_url, schema=postgres_schema, pool_max_size=4)
        await store.open()
        try:
            await store.add(Resource("app", "x"), "f", actor=None)
            for round_ in range(3):
                await asyncio.gather(*(store.has(Resource("app", "x"), "f") for _ in range(4)))
                (ended,) = postgres_admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'features-gql' AND pid <> pg_backend_pid()"
                ).fetchall()
                assert ended[0] >= 1
                answers = await asyncio.gather(
                    *(store.has(Resource("app", "x"), "f") for _ in range(4)),
                    store.add(Resource("app", "y"), f"f{round_}", actor=None),
                )
                assert answers[:4] == [True] * 4
        finally:
            await store.close()

    run(scenario())


# -- concurrency across connections ----------------------------------------------------


def test_followers_never_see_a_revision_before_the_ones_below_it(
    postgres_url: str, postgres_schema: str
) -> None:
    """Writers on separate pools (as separate processes would be) and a follower polling
    the log: every batch it reads continues exactly where the last one ended."""
    writes_per_writer = 40

    async def scenario() -> None:
        writers = [PostgresStore(postgres_url, schema=postgres_schema) for _ in range(3)]
        follower = PostgresStore(postgres_url, schema=postgres_schema)
        for store in (*writers, follower):
            await store.open()
        done = asyncio.Event()
        seen: list[int] = []

        async def follow() -> None:
            while True:
                finished = done.is_set()
                batch = await follower.changes_since(seen[-1] if seen else 0, limit=1000)
                seen.extend(change.revision for change in batch)
                assert seen == list(range(1, len(seen) + 1)), "a follower skipped a revision"
                if finished and not batch:
                    return
                await asyncio.sleep(0)

        async def write(store: PostgresStore, n: int) -> None:
            for i in range(writes_per_writer):
                resource = Resource("app", f"w{n}-{i % 5}")
                await (store.add if i % 2 == 0 else store.remove)(resource, "f", actor=None)
                await store.add(resource, f"g{i}", actor=f"writer-{n}")

        try:
            reader = asyncio.ensure_future(follow())
            await asyncio.gather(*(write(store, n) for n, store in enumerate(writers)))
            done.set()
            await reader
            assert seen[-1] == await follower.revision()
        finally:
            for store in (*writers, follower):
                await store.close()

    run(scenario())


# -- embedding, options, errors --------------------------------------------------------


def test_embedding_with_the_applications_own_pool(
    postgres_url: str, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """An application hands over its asyncpg pool; the store uses it and never closes it."""

    async def scenario() -> None:
        pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
        store = PostgresStore(pool=pool, schema=postgres_schema)
        assert store.describe() == f"postgres the application's pool, schema {postgres_schema!r}"
        await store.open()
        try:
            assert (await store.add(Resource("user", "42"), "beta", actor=None)).changed
            assert await store.check_many([(Resource("user", "42"), "beta")]) == [True]
        finally:
            await store.close()
        # Still the application's, and still working.
        assert await pool.fetchval("SELECT count(*) FROM " + postgres_schema + ".assignments") == 1
        await pool.close()

    run(scenario())


def test_writes_through_a_serializable_pool_retry_their_conflicts(
    postgres_url: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An application's connections default to SERIALIZABLE: concurrent writes collide on
    the revision row, are retried, and still log every change once, densely."""

    async def scenario() -> None:
        pool = await asyncpg.create_pool(
            postgres_url,
            min_size=4,
            max_size=4,
            server_settings={"default_transaction_isolation": "serializable"},
        )
        store = PostgresStore(pool=pool, schema=postgres_schema)
        await store.open()
        try:
            results = await asyncio.gather(
                *(store.add(Resource("app", str(n)), "f", actor=None) for n in range(20))
            )
            assert sorted(r.revision for r in results) == list(range(1, 21))
            assert [c.revision for c in await store.changes_since(0, limit=50)] == list(
                range(1, 21)
            )
        finally:
            await store.close()
            await pool.close()

    caplog.set_level(logging.DEBUG, "features_gql.stores.postgres")
    run(scenario())
    assert "conflicted (attempt 1, 40001); retrying" in caplog.text


def test_options_and_urls() -> None:
    url, ours = split_url("postgresql://u:p@h:5432/app?sslmode=disable&schema=flags")
    assert (url, ours) == ("postgresql://u:p@h:5432/app?sslmode=disable", {"schema": "flags"})
    store = PostgresStore("postgres://u:p@h/app?schema=flags&table_prefix=ff_")
    assert (store.schema, store.table_prefix) == ("flags", "ff_")
    assert PostgresStore("postgresql://h/app").schema == "features_gql"
    assert PostgresStore("postgresql://h/app?schema=x", schema="x").schema == "x"
    bad: list[dict[str, Any]] = [
        {"url": "mongodb://h/x"},
        {"url": "postgresql://h/x", "schema": "Flags"},
        {"url": "postgresql://h/x", "schema": "1flags"},
        {"url": "postgresql://h/x", "table_prefix": "no-dashes"},
        {"url": "postgresql://h/x", "table_prefix": "x" * 41},
        {"url": "postgresql://h/x?schema=a", "schema": "b"},
        {"url": "postgresql://h/x", "pool_max_size": 0},
        {},
    ]
    for options in bad:
        with pytest.raises(ConfigError):
            PostgresStore(**options)


@pytest.mark.parametrize(
    "url", ["postgresql://u:pw@127.0.0.1:notaport/db", "postgresql://127.0.0.1:1/db?sslmode=no"]
)
def test_a_url_the_driver_cannot_use_stops_the_start(url: str) -> None:
    store = PostgresStore(url)
    with pytest.raises(ConfigError, match="cannot be used as configured") as raised:
        run(_open_and_close(store))
    assert "pw" not in str(raised.value)


def test_plugin_reads_its_options() -> None:
    table = {
        "plugin": "postgres",
        "url": "postgresql://flags:s3cret@db.internal/app",
        "schema": "flags",
        "table_prefix": "ff_",
        "pool_max_size": 4,
        "connect_timeout_ms": 700,
        "command_timeout_ms": 900,
        "statement_cache_size": 0,
    }
    store = build(Settings(store=table, loggers=())).store
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.table_prefix, store.pool_max_size) == ("flags", "ff_", 4)
    assert (store.connect_timeout, store.command_timeout) == (0.7, 0.9)
    assert store.statement_cache_size == 0
    for scheme in ("postgres", "postgresql"):
        by_url = build(Settings(store=f"{scheme}://h/app?schema=s", loggers=())).store
        assert isinstance(by_url, PostgresStore)
        assert by_url.schema == "s"
    with pytest.raises(ConfigError, match="tabel_prefix"):
        build(Settings(store={**table, "tabel_prefix": "x"}, loggers=()))
    with pytest.raises(ConfigError, match="pool_max_size"):
        build(Settings(store={**table, "pool_max_size": "4"}, loggers=()))
    with pytest.raises(ConfigError, match="url"):
        build(Settings(store={"plugin": "postgres"}, loggers=()))


def test_passwords_never_appear_in_descriptions() -> None:
    for url in (
        "postgresql://flags:s3cret@db.internal:5432/app?schema=f",
        "postgresql://flags@db.internal/app?password=s3cret&sslmode=require",
        "postgresql://flags:s%33cret@db.internal/app",
    ):
        store = PostgresStore(url)
        assert "s3cret" not in store.describe()
        assert "s%33cret" not in store.describe()
        assert "db.internal" in store.describe()
    assert redact("failed for postgresql://u:pw@h/x?password=pw2", ["pw2"]) == (
        "failed for postgresql://u:***@h/x?password=***"
    )


def _postgres_error(sqlstate: str, message: str) -> asyncpg.PostgresError:
    cls = asyncpg.PostgresError.get_message_class_for_sqlstate(sqlstate)
    return cls(message)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: ConnectionRefusedError(111, "Connection refused"), StoreUnavailable),
        (lambda: TimeoutError(), StoreTimeout),
        (lambda: _postgres_error("57014", "canceling statement"), StoreTimeout),
        (lambda: _postgres_error("55P03", "lock timeout"), StoreTimeout),
        (lambda: _postgres_error("40001", "could not serialize"), StoreConflict),
        (lambda: _postgres_error("40P01", "deadlock detected"), StoreConflict),
        (lambda: _postgres_error("28P01", "password authentication failed"), StoreUnavailable),
        (lambda: _postgres_error("57P01", "terminating connection"), StoreUnavailable),
        (lambda: _postgres_error("53300", "too many clients"), StoreUnavailable),
        (lambda: _postgres_error("42501", "permission denied"), StoreUnavailable),
        (lambda: asyncpg.InterfaceError("connection is closed"), StoreUnavailable),
    ],
)
def test_driver_errors_become_typed_store_errors(
    make: Callable[[], BaseException], expected: type
) -> None:
    assert type(translate_error(make())) is expected


# -- end to end: GraphQL over HTTP ----------------------------------------------------


@pytest.mark.parametrize("name", mongodb_tests.E2E_TESTS)
async def test_graphql_over_http_on_postgres(
    start_server: StartServer, postgres_url: str, postgres_schema: str, name: str
) -> None:
    """The HTTP end-to-end tests, on ``--store postgresql://...?schema=<schema>``."""
    server = await start_server(with_schema(postgres_url, postgres_schema))
    assert server.service.store.name == "postgres"
    await getattr(http_tests, name)(server)


# -- separate processes ----------------------------------------------------------------


@pytest.fixture
def two_instances(postgres_url: str, postgres_schema: str) -> Iterator[list[int]]:
    """Two ``features-gql serve --store postgresql://...`` processes on one schema."""
    env = clean_env()
    url = with_schema(postgres_url, postgres_schema)
    instances = [Serving(["--store", url], env) for _ in range(2)]
    try:
        yield [instance.port for instance in instances]
    finally:
        for instance in instances:
            output = instance.stop(signal.SIGINT)
            assert "Traceback" not in output, output


@pytest.mark.slow
async def test_two_instances_write_one_database_concurrently(two_instances: list[int]) -> None:
    """The MongoDB scenario: both processes write every pair at once; each change takes
    effect once, and revisions are dense and shared."""
    await mongodb_tests.test_two_instances_write_one_database_concurrently(two_instances)


@pytest.mark.slow
async def test_kill_9_under_writes_loses_no_acknowledged_write(
    postgres_url: str, postgres_schema: str
) -> None:
    env = clean_env()
    url = with_schema(postgres_url, postgres_schema)
    first = Serving(["--store", url], env)
    acknowledged: list[tuple[str, int]] = []
    stop = asyncio.Event()

    async def writer(session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not stop.is_set():
            feature = f"w{n}-{i}"
            i += 1
            try:
                async with session.post(
                    f"http://127.0.0.1:{first.port}/graphql",
                    json={"query": http_tests.ADD, "variables": {"r": RESOURCE, "f": feature}},
                ) as response:
                    body = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                return  # the process is gone; this write was never acknowledged
            result = body["data"]["addFeature"]
            assert result["changed"] is True, body
            acknowledged.append((feature, result["revision"]))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        writers = [asyncio.ensure_future(writer(session, n)) for n in range(8)]
        while len(acknowledged) < 150:
            await asyncio.sleep(0.01)
        first.process.send_signal(signal.SIGKILL)  # with writes in flight
        first.process.wait()
        stop.set()
        await asyncio.gather(*writers)

    second = Serving(["--store", url], env)
    try:
        features = set(post(second.port, FEATURES)["data"]["resource"]["features"])
        assert {feature for feature, _ in acknowledged} <= features
        log = post(second.port, "{ changes(after: 0, first: 1000) { revision feature } }")
        revisions = [c["revision"] for c in log["data"]["changes"]]
        # Dense: in-flight writes either committed whole (change and event) or not at all.
        assert revisions == list(range(1, len(revisions) + 1))
        assert len(revisions) == len(features)
        by_feature = {c["feature"]: c["revision"] for c in log["data"]["changes"]}
        assert all(by_feature[feature] == revision for feature, revision in acknowledged)
    finally:
        assert "Traceback" not in second.stop()


def test_no_postgres_fails_loudly_rather_than_skipping(tmp_path: Path) -> None:
    """Without an installation (and no POSTGRES_URL), the tests error with a hint."""
    test = tmp_path / "test_needs_postgres.py"
    test.write_text(
        "from tests.postgres_server import postgres_server, postgres_template, postgres_url\n"
        "def test_it(postgres_url):\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_URL"}
    env.update(POSTGRES_BIN_DIR=str(tmp_path / "nowhere"), PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "--confcutdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(test)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout
    assert "apt-get install -y postgresql" in result.stdout
