"""The mongodb store against a real MongoDB wire-protocol server.

The embedded server (or ``MONGODB_URL``) comes from ``tests/mongodb_server.py``. The
tests that stop and restart a server always start their own embedded one.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteError,
    WTimeoutError,
)

import tests.test_graphql_http as http_tests
from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.domain import FeatureSpec, Resource, ResourceTypeCount
from features_gql.errors import ConfigError, StoreTimeout, StoreUnavailable
from features_gql.stores import Store
from features_gql.testing import NetworkStoreContract, OutageServer, StoreContract
from features_gql_plugins.mongodb_store import (
    ASSIGNMENTS_INDEX,
    BY_FEATURE_INDEX,
    MongoDBStore,
    database_from_url,
    translate_error,
)
from tests.conftest import Server, StartServer
from tests.mongodb_server import EmbeddedMongoDB, with_database

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "features_gql.cli", "serve"]
STORE_ERRORS = {"STORE_UNAVAILABLE", "STORE_TIMEOUT"}
#: Short driver timeouts for the tests that take the server away.
FAST_FAILURE = {
    "server_selection_timeout_ms": 400,
    "connect_timeout_ms": 400,
    "socket_timeout_ms": 1000,
}


# -- the contract, on both drivers -----------------------------------------------------


class TestMongoDBStorePyMongo(StoreContract):
    @pytest.fixture
    def make_store(self, mongodb_url: str, mongodb_database: str) -> Callable[[], Store]:
        return lambda: MongoDBStore(mongodb_url, database=mongodb_database)


class TestMongoDBStoreMotor(StoreContract):
    @pytest.fixture
    def make_store(self, mongodb_url: str, mongodb_database: str) -> Callable[[], Store]:
        return lambda: MongoDBStore(mongodb_url, database=mongodb_database, driver="motor")


class TestMongoDBStoreWithoutTransactions(StoreContract):
    """The mode used on a standalone mongod (no transactions) must be just as correct."""

    @pytest.fixture
    def make_store(self, mongodb_url: str, mongodb_database: str) -> Callable[[], Store]:
        return lambda: MongoDBStore(mongodb_url, database=mongodb_database, transactions="off")


@pytest.mark.slow
class TestMongoDBStoreOutages(NetworkStoreContract):
    """The database goes away and comes back (an embedded server of the test's own)."""

    @pytest.fixture
    def outage_server(self, tmp_path: Path) -> Iterator[OutageServer]:
        server = EmbeddedMongoDB(tmp_path / "mongodb", port=free_port())
        url = with_database(server.url, "outage")
        yield OutageServer(server.start, server.stop, lambda: MongoDBStore(url, **FAST_FAILURE))
        server.stop()


# -- store details ---------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_layout_indexes_and_prefix(
    mongodb_url: str, mongodb_database: str, mongodb_admin: MongoClient[dict[str, Any]]
) -> None:
    async def scenario() -> None:
        store = MongoDBStore(mongodb_url, database=mongodb_database, collection_prefix="app_ff_")
        await store.open()
        try:
            await store.add(Resource("app", "1"), "beta", actor="alice")
            if "MONGODB_URL" not in os.environ:
                assert store.transactional is True, "the embedded server is a replica set"
        finally:
            await store.close()

    run(scenario())
    db = mongodb_admin[mongodb_database]
    assert sorted(db.list_collection_names()) == [
        "app_ff_assignments",
        "app_ff_changes",
        "app_ff_counters",
        "app_ff_features",
        "app_ff_resource_types",
        "app_ff_resources",
    ]
    history_indexes = {i["name"]: list(i["key"]) for i in db["app_ff_changes"].list_indexes()}
    assert history_indexes["by_resource"] == ["type", "id", "_id"]
    assert history_indexes["by_feature"] == ["feature", "_id"]
    assert history_indexes["by_actor"] == ["actor", "_id"]
    assert db["app_ff_features"].find_one({"_id": "beta"}) == {"_id": "beta", "count": 1}
    assert db["app_ff_resource_types"].find_one({"_id": "app"}) == {"_id": "app", "count": 1}
    indexes = {i["name"]: i for i in db["app_ff_assignments"].list_indexes()}
    assert list(indexes[ASSIGNMENTS_INDEX]["key"]) == ["type", "id", "feature"]
    assert indexes[ASSIGNMENTS_INDEX]["unique"] is True
    assert list(indexes[BY_FEATURE_INDEX]["key"]) == ["feature", "type", "id"]
    (doc,) = db["app_ff_assignments"].find({}, {"_id": 0, "at": 0})
    assert doc == {"type": "app", "id": "1", "feature": "beta", "actor": "alice"}
    (change,) = db["app_ff_changes"].find({}, {"at": 0})
    assert change == {
        "_id": 1,
        "op": "add",
        "type": "app",
        "id": "1",
        "feature": "beta",
        "actor": "alice",
    }
    assert db["app_ff_counters"].find_one({"_id": "revision"}) == {"_id": "revision", "seq": 1}
    assert db["app_ff_counters"].find_one({"_id": "layout"}) == {"_id": "layout", "version": 2}


def test_a_first_layout_store_is_upgraded_with_its_counts(
    mongodb_url: str, mongodb_database: str, mongodb_admin: MongoClient[dict[str, Any]]
) -> None:
    """A store written before the catalog existed: its counts are computed once at set-up."""

    async def write() -> None:
        store = MongoDBStore(mongodb_url, database=mongodb_database)
        await store.open()
        try:
            for type_, id_, feature in [("app", "a", "f"), ("app", "a", "g"), ("app", "b", "f")]:
                await store.add(Resource(type_, id_), feature, actor=None)
        finally:
            await store.close()

    run(write())
    db = mongodb_admin[mongodb_database]
    for suffix in ("features", "resources", "resource_types"):
        db.drop_collection(f"features_{suffix}")
    db["features_counters"].delete_one({"_id": "layout"})

    async def read() -> None:
        store = MongoDBStore(mongodb_url, database=mongodb_database)
        await store.open()
        try:
            infos = await store.feature_infos(["f", "g"])
            assert [i.resource_count for i in infos] == [2, 1]
            assert await store.resource_types(after=None, limit=5) == [ResourceTypeCount("app", 2)]
            assert await store.list_resources("app", after=None, limit=5) == [
                Resource("app", "a"),
                Resource("app", "b"),
            ]
            assert (await store.define(FeatureSpec("f"), actor=None)).revision == 4
        finally:
            await store.close()

    run(read())
    assert db["features_counters"].find_one({"_id": "layout"}) == {"_id": "layout", "version": 2}


def test_counter_is_rebuilt_from_the_change_log(
    mongodb_url: str, mongodb_database: str, mongodb_admin: MongoClient[dict[str, Any]]
) -> None:
    def store() -> MongoDBStore:
        return MongoDBStore(mongodb_url, database=mongodb_database)

    async def write(n: int) -> None:
        s = store()
        await s.open()
        try:
            for i in range(n):
                await s.add(Resource("app", "x"), f"f{i}", actor=None)
        finally:
            await s.close()

    run(write(3))
    mongodb_admin[mongodb_database]["features_counters"].delete_many({})

    async def check() -> None:
        s = store()
        await s.open()
        try:
            assert await s.revision() == 3
            assert (await s.add(Resource("app", "x"), "more", actor=None)).revision == 4
        finally:
            await s.close()

    run(check())


def test_changes_since_waits_for_a_revision_still_being_logged(
    mongodb_url: str, mongodb_database: str, mongodb_admin: MongoClient[dict[str, Any]]
) -> None:
    """Without transactions, a follower must not move past a hole that may still fill."""
    changes = mongodb_admin[mongodb_database]["features_changes"]

    async def scenario() -> None:
        store = MongoDBStore(
            mongodb_url, database=mongodb_database, transactions="off", gap_grace_seconds=5
        )
        await store.open()
        try:
            for feature in ("a", "b", "c"):
                await store.add(Resource("app", "x"), feature, actor=None)
            # Revision 2 was handed out but its writer has not logged it (yet).
            hole = changes.find_one_and_delete({"_id": 2})
            assert [c.revision for c in await store.changes_since(0, limit=10)] == [1]
            assert [c.revision for c in await store.changes_since(2, limit=10)] == [3]
            assert hole is not None
            changes.insert_one(hole)
            assert [c.revision for c in await store.changes_since(0, limit=10)] == [1, 2, 3]
            # A hole whose successor is older than the grace period is a writer that died.
            changes.delete_one({"_id": 2})
            changes.update_one({"_id": 3}, {"$set": {"at": hole["at"].replace(year=2000)}})
            assert [c.revision for c in await store.changes_since(0, limit=10)] == [1, 3]
        finally:
            await store.close()

    run(scenario())


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
def test_embedding_with_the_applications_own_client(
    mongodb_url: str, mongodb_database: str, driver: str
) -> None:
    """An application hands over its client and database; the store never closes it."""

    async def scenario() -> None:
        if driver == "motor":
            from motor.motor_asyncio import AsyncIOMotorClient

            client: Any = AsyncIOMotorClient(mongodb_url)
        else:
            from pymongo import AsyncMongoClient

            client = AsyncMongoClient(mongodb_url)
        store = MongoDBStore(client=client, database=mongodb_database, collection_prefix="ff_")
        assert store.driver == driver
        await store.open()
        try:
            assert (await store.add(Resource("user", "42"), "beta", actor=None)).changed
            assert await store.check_many([(Resource("user", "42"), "beta")]) == [True]
        finally:
            await store.close()
        # Still the application's: open, and holding the store's collections.
        names = await client[mongodb_database].list_collection_names()
        assert "ff_assignments" in names
        closing = client.close()
        if asyncio.iscoroutine(closing):
            await closing

    run(scenario())


def test_options_and_urls() -> None:
    assert database_from_url("mongodb://h:1/flags?replicaSet=rs0") == "flags"
    assert database_from_url("mongodb+srv://u:p%40@cluster.example.net/") is None
    assert database_from_url("mongodb://a,b,c") is None
    store = MongoDBStore("mongodb://h/flags")
    assert (store.database, store.collection_prefix) == ("flags", "features_")
    assert MongoDBStore("mongodb://h/").database == "features_gql"
    assert MongoDBStore("mongodb://h/x", database="y").database == "y"
    bad_options: list[dict[str, Any]] = [
        {"url": "postgres://h/x"},
        {"url": "mongodb://h/bad.name"},
        {"url": "mongodb://h/x", "collection_prefix": "no spaces"},
        {"url": "mongodb://h/x", "driver": "pymongo-sync"},
        {"url": "mongodb://h/x", "transactions": "sometimes"},
    ]
    for bad in bad_options:
        with pytest.raises(ConfigError):
            MongoDBStore(**bad)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://bad host:27017", "invalid host 'bad host'"),
        ("mongodb+srv://bad host/flags", "invalid host 'bad host'"),
        ("mongodb://db1,:27017/flags", "invalid host ''"),
        ("mongodb://db1:99999/flags", "invalid port '99999'"),
        ("mongodb://db1:port/flags", "invalid port 'port'"),
        # The driver names the unknown option in lower case, or (newer versions) only the
        # ones it meant: the URI in the message names it as given.
        ("mongodb://u:secret@db1/flags?replicaset=rs0&sokcetTimeoutMS=1", "(?i)sokcettimeoutms"),
    ],
)
def test_a_uri_the_driver_could_never_use_is_refused_when_configured(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        build(Settings(store=url, loggers=()))
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://localhost",
        "mongodb://db_1.internal:27017,db-2:27018/flags?replicaSet=rs0",
        "mongodb://[::1]:27017/",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock/flags",
        "mongodb://user:p%40ss@db1/flags?authSource=admin",
        "mongodb+srv://cluster0.example.net/flags",
    ],
)
def test_uris_of_every_shape_are_accepted(url: str) -> None:
    assert isinstance(build(Settings(store=url, loggers=())).store, MongoDBStore)


def test_plugin_reads_its_options() -> None:
    table = {
        "plugin": "mongodb",
        "url": "mongodb://db.internal:27017/app?socketTimeoutMS=900",
        "collection_prefix": "flags_",
        "driver": "motor",
        "server_selection_timeout_ms": 700,
    }
    store = build(Settings(store=table, loggers=())).store
    assert isinstance(store, MongoDBStore)
    assert (store.database, store.collection_prefix, store.driver) == ("app", "flags_", "motor")
    options = store._client_options
    assert options["serverSelectionTimeoutMS"] == 700
    assert options["connectTimeoutMS"] == 1000
    assert "socketTimeoutMS" not in options, "a timeout in the URI wins over the default"
    by_url = build(Settings(store="mongodb+srv://cluster.example.net/x", loggers=())).store
    assert isinstance(by_url, MongoDBStore)
    with pytest.raises(ConfigError, match="colection_prefix"):
        build(Settings(store={**table, "colection_prefix": "x"}, loggers=()))
    with pytest.raises(ConfigError, match="server_selection_timeout_ms"):
        build(Settings(store={**table, "server_selection_timeout_ms": "1s"}, loggers=()))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServerSelectionTimeoutError("no servers"), StoreUnavailable),
        (AutoReconnect("connection reset"), StoreUnavailable),
        (NetworkTimeout("timed out"), StoreTimeout),
        (ExecutionTimeout("operation exceeded time limit", 50), StoreTimeout),
        (OperationFailure("not authorized", 13), StoreUnavailable),
        (WriteError("document failed validation", 121), StoreUnavailable),
        (DuplicateKeyError("E11000", 11000), StoreUnavailable),
        (WTimeoutError("waiting for replication timed out", 64), StoreTimeout),
        (WaitQueueTimeoutError("pool exhausted"), StoreTimeout),
    ],
)
def test_driver_errors_become_typed_store_errors(error: Exception, expected: type) -> None:
    translated = translate_error(error)  # type: ignore[arg-type]
    assert type(translated) is expected


# -- end to end: GraphQL over HTTP ----------------------------------------------------

E2E_TESTS = [
    "test_add_has_remove_round_trip",
    "test_resource_query",
    "test_many_resources_in_one_request_make_one_store_call",
    "test_checks_answer_in_order_with_one_store_call",
    "test_feature_resources_paginate",
    "test_unicode_and_odd_ids_round_trip_over_http",
    "test_change_log_query",
]


@pytest.mark.parametrize("name", E2E_TESTS)
async def test_graphql_over_http_on_mongodb(
    start_server: StartServer, mongodb_url: str, mongodb_database: str, name: str
) -> None:
    """The HTTP end-to-end tests, on ``--store mongodb://.../<database>``."""
    server = await start_server(with_database(mongodb_url, mongodb_database))
    assert server.service.store.name == "mongodb"
    await getattr(http_tests, name)(server)


@pytest.mark.parametrize("name", ["test_add_has_remove_round_trip", "test_change_log_query"])
async def test_graphql_over_http_on_motor(
    start_server: StartServer, mongodb_url: str, mongodb_database: str, name: str
) -> None:
    server = await start_server(
        {"plugin": "mongodb", "url": mongodb_url, "database": mongodb_database, "driver": "motor"}
    )
    assert server.service.store.name == "mongodb(motor)"
    await getattr(http_tests, name)(server)


# -- two API processes, one database -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def two_instances(mongodb_url: str, mongodb_database: str, tmp_path: Path) -> Iterator[list[int]]:
    """Two ``features-gql serve --store mongodb://...`` processes on one database."""
    url = with_database(mongodb_url, mongodb_database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    logs = [tmp_path / f"serve-{n}.log" for n in range(2)]
    try:
        for path in logs:
            port = free_port()
            with path.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [*SERVE, "--port", str(port), "--store", url],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
            ports.append(port)
        deadline = time.monotonic() + 30
        for port, process, path in zip(ports, processes, logs, strict=True):
            while True:
                assert process.poll() is None, path.read_text()
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "features-gql serve did not start"
                    time.sleep(0.1)
        yield ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _post(
    session: aiohttp.ClientSession, port: int, query: str, variables: dict[str, Any]
) -> Any:
    async with session.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables}
    ) as response:
        body = await response.json(content_type=None)
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.slow
async def test_two_instances_write_one_database_concurrently(two_instances: list[int]) -> None:
    rng = random.Random(7)
    pairs = [(f"r{i % 12}", f"f{i // 12}") for i in range(48)]
    limit = asyncio.Semaphore(16)

    async def write(
        session: aiohttp.ClientSession, mutation: str, port: int, rid: str, feature: str
    ) -> tuple[str, str, Any]:
        async with limit:
            data = await _post(
                session, port, mutation, {"r": {"type": "res", "id": rid}, "f": feature}
            )
        return rid, feature, next(iter(data.values()))

    async def everyone(mutation: str, targets: list[tuple[str, str]]) -> list[tuple[str, str, Any]]:
        # Every pair is written by both instances at once, in a random order.
        jobs = [(port, rid, f) for rid, f in targets for port in two_instances]
        rng.shuffle(jobs)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return await asyncio.gather(
                *(write(session, mutation, port, rid, f) for port, rid, f in jobs)
            )

    added = await everyone(http_tests.ADD, pairs)
    removed_pairs = pairs[::2]
    removed = await everyone(http_tests.REMOVE, removed_pairs)

    for results, targets in ((added, pairs), (removed, removed_pairs)):
        changed = [(rid, f, r["revision"]) for rid, f, r in results if r["changed"]]
        # Exactly one of the two writes of each pair took effect: nothing lost, nothing twice.
        assert sorted((rid, f) for rid, f, _ in changed) == sorted(targets)
    revisions = [r["revision"] for _, _, r in added + removed if r["changed"]]
    assert sorted(revisions) == list(range(1, len(pairs) + len(removed_pairs) + 1))

    async with aiohttp.ClientSession() as session:
        log = (
            await _post(
                session,
                two_instances[0],
                "{ changes(after: 0, first: 1000) { revision op feature resource { id } } }",
                {},
            )
        )["changes"]
        expected = sorted(set(pairs) - set(removed_pairs))
        for port in two_instances:
            data = await _post(
                session,
                port,
                "query ($f: String!) { revision feature(name: $f) "
                "{ resources(first: 100) { edges { node { id } } } } }",
                {"f": "f0"},
            )
            assert data["revision"] == len(revisions)
            holders = [e["node"]["id"] for e in data["feature"]["resources"]["edges"]]
            assert holders == sorted(rid for rid, f in expected if f == "f0")
    assert [c["revision"] for c in log] == list(range(1, len(revisions) + 1))
    assert sorted((c["resource"]["id"], c["feature"]) for c in log if c["op"] == "ADD") == sorted(
        pairs
    )
    assert sorted(
        (c["resource"]["id"], c["feature"]) for c in log if c["op"] == "REMOVE"
    ) == sorted(removed_pairs)


# -- the database goes away and comes back ---------------------------------------------


@pytest.fixture
async def own_mongodb(tmp_path: Path) -> AsyncIterator[EmbeddedMongoDB]:
    """An embedded server this test may stop and start (never MONGODB_URL's)."""
    server = EmbeddedMongoDB(tmp_path / "mongodb", port=free_port())
    yield server
    await asyncio.to_thread(server.stop)


async def _has(server: Server, rid: str, feature: str) -> tuple[float, Any]:
    started = time.monotonic()
    response = await server.gql(http_tests.HAS, {"r": {"type": "app", "id": rid}, "f": feature})
    return time.monotonic() - started, response


async def _until_answers(server: Server, rid: str, feature: str) -> bool:
    deadline = time.monotonic() + 15
    while True:
        _, response = await _has(server, rid, feature)
        if not response.errors:
            value: bool = response.data["hasFeature"]
            return value
        assert set(response.codes) <= STORE_ERRORS, response.body
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.2)


async def test_a_database_that_refuses_connections_is_unavailable_not_a_timeout(
    start_server: StartServer, own_mongodb: EmbeddedMongoDB
) -> None:
    # own_mongodb is not started: its port refuses connections. The driver's server
    # selection takes 400 ms here to give up; the readiness probe allows 500 ms, but only
    # a store that takes the driver's word at once answers within a 300 ms deadline.
    server = await start_server(
        {"plugin": "mongodb", "url": with_database(own_mongodb.url, "refused"), **FAST_FAILURE},
        deadline=0.3,
    )
    async with server.session.get(f"{server.url}/readyz") as ready:
        assert ready.status == 503
        assert (await ready.json())["reason"] == "store unavailable"
    for _ in range(3):
        _, response = await _has(server, "a", "beta")
        assert response.codes == ["STORE_UNAVAILABLE"], response.body
    assert [e.outcome for e in server.events()[-3:]] == ["unavailable"] * 3

    await asyncio.to_thread(own_mongodb.start)
    assert await _until_answers(server, "a", "beta") is False
