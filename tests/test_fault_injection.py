"""Fault injection through the real HTTP API: the service degrades cleanly.

Every fault a store injects becomes a typed GraphQL error with HTTP 200, marked
``injected``; nothing is a 500, a traceback or a hang; answers the store could give
still arrive; and the service answers correctly as soon as the fault stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import pytest

from features_gql.config import Settings, from_toml, load_settings
from features_gql.errors import ConfigError
from features_gql.faults import parse_assignments, wrap_store
from features_gql.plugin_manager import collect, create_plugin_manager
from features_gql.stores import StoreBuilder
from features_gql_plugins.failing_store import FailingStore
from features_gql_plugins.fault_loggers import FailingLogger, SlowLogger
from tests.conftest import GraphQLResponse, Server, StartServer, bearer, make_tokens

TOKEN = "drill-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

HAS = "query ($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
ADD = """mutation ($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) { ... on FeatureChange { changed revision } }
}"""
REMOVE = ADD.replace("addFeature", "removeFeature")
STORE_CODES = {"STORE_UNAVAILABLE", "STORE_TIMEOUT", "STORE_CONFLICT"}


def failing(inner: Any = "memory", **options: Any) -> dict[str, Any]:
    return {"plugin": "failing", **options, "inner": inner}


def slow(inner: Any = "memory", **options: Any) -> dict[str, Any]:
    return {"plugin": "slow", **options, "inner": inner}


def app(i: int) -> dict[str, str]:
    return {"type": "app", "id": f"app-{i}"}


def assert_injected_error(response: GraphQLResponse, code: str) -> None:
    """HTTP 200, one typed error marked injected, a clean message and no internals."""
    assert response.status == 200, response.body
    assert response.codes == [code], response.body
    error = response.errors[0]
    assert error["extensions"]["injected"] is True
    assert error["extensions"]["requestId"] == response.headers["X-Request-ID"]
    assert "injected fault" not in error["message"]  # internals stay in the logs
    assert "Traceback" not in str(response.body)


async def admin(
    server: Server, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    url = f"{server.url}/admin/faults"
    headers = AUTH if headers is None else headers
    if body is None:
        request = server.session.get(url, headers=headers)
    else:
        request = server.session.post(url, json=body, headers=headers)
    async with request as response:
        return response.status, await response.json()


# -- a 20 % error rate ------------------------------------------------------------------


async def run_error_rate_drill(start_server: StartServer, requests: int) -> list[str]:
    """Random adds, removes and reads against a 20 % error rate, checked against a model.

    Returns the outcome of every request; asserts that each one is either the right
    answer or a typed, injected STORE_UNAVAILABLE, and that every count adds up.
    """
    server = await start_server(failing(error_rate=0.2, seed=2024), admin_token=TOKEN)
    store = server.service.store
    assert isinstance(store, FailingStore)
    plan = random.Random(7)
    model: set[tuple[int, str]] = set()
    revision = 0
    outcomes: list[str] = []
    for _ in range(requests):
        op = plan.choice(["add", "remove", "has", "has"])
        key = (plan.randrange(5), plan.choice(["a", "b", "c"]))
        variables = {"r": app(key[0]), "f": key[1]}
        if op == "has":
            response = await server.gql(HAS, variables)
            answer = response.data["hasFeature"]
            if answer is not None:
                assert response.errors == []
                assert answer is (key in model)
        else:
            response = await server.gql(ADD if op == "add" else REMOVE, variables)
            answer = response.data[f"{op}Feature"]
            if answer is not None:
                assert response.errors == []
                expected = (key not in model) if op == "add" else (key in model)
                assert answer["changed"] is expected
                if expected:
                    revision += 1
                    (model.add if op == "add" else model.discard)(key)
                assert answer["revision"] == revision
        if answer is None:
            assert_injected_error(response, "STORE_UNAVAILABLE")
        outcomes.append("ok" if answer is not None else "refused")

    refused = outcomes.count("refused")
    assert outcomes.count("ok") + refused == requests
    # Plus three: the readiness probe and the catalog's load (revision, list_features) at
    # start-up are store calls like any other.
    assert store.fault_state()["calls"] == requests + 3
    assert store.fault_state()["injected"]["error_rate"] == refused
    events = server.events()
    assert len(events) == requests
    assert sum(e.injected and e.outcome == "unavailable" for e in events) == refused
    assert all(e.outcome == "ok" for e in events if not e.injected)
    assert 0.12 * requests < refused < 0.28 * requests

    # The fault stops: every answer is right at once, and nothing refused was applied.
    status, _ = await admin(server, {"error_rate": 0})
    assert status == 200
    response = await server.gql(
        "query ($rs: [CheckInput!]!) { checks(items: $rs) { enabled } revision }",
        {"rs": [{"resource": app(i), "feature": f} for i in range(5) for f in "abc"]},
    )
    assert response.errors == []
    assert [c["enabled"] for c in response.data["checks"]] == [
        (i, f) in model for i in range(5) for f in "abc"
    ]
    assert response.data["revision"] == revision
    return outcomes


async def test_error_rate_over_hundreds_of_requests_is_correct_or_typed(
    start_server: StartServer,
) -> None:
    first = await run_error_rate_drill(start_server, 300)
    # Same seed, same requests: the same requests fail.
    assert await run_error_rate_drill(start_server, 300) == first


async def test_every_nth_write_fails_and_reads_never_do(start_server: StartServer) -> None:
    server = await start_server(failing(every_nth=3, operations=["writes"]))
    answers = []
    for i in range(9):
        response = await server.gql(ADD, {"r": app(i), "f": "f"})
        answers.append(response.data["addFeature"] is not None)
        if not answers[-1]:
            assert_injected_error(response, "STORE_UNAVAILABLE")
        assert (await server.gql(HAS, {"r": app(i), "f": "f"})).errors == []
    assert answers == [True, True, False] * 3


# -- batches: one failing call hides nothing else ----------------------------------------


async def test_a_failing_batch_keeps_the_answers_of_other_calls(start_server: StartServer) -> None:
    server = await start_server(failing(error_rate=1.0, operations=["check_many"]))
    for i in range(2):
        await server.gql(ADD, {"r": app(i), "f": "beta"})
    response = await server.gql(
        """{ a: resource(type: "app", id: "app-0") { features beta: hasFeature(feature: "beta") }
             b: resource(type: "app", id: "app-1") { features beta: hasFeature(feature: "beta") }
             revision
             checks(items: [{resource: {type: "app", id: "app-0"}, feature: "beta"}]) { enabled }
           }"""
    )
    assert response.status == 200
    assert response.data == {
        "a": {"features": ["beta"], "beta": None},
        "b": {"features": ["beta"], "beta": None},
        "revision": 2,
        "checks": None,
    }
    # The two hasFeature fields were one check_many call: one failure, an error per field.
    paths = sorted(error["path"] for error in response.errors)
    assert paths == [["a", "beta"], ["b", "beta"], ["checks"]]
    assert set(response.codes) == {"STORE_UNAVAILABLE"}
    assert all(error["extensions"]["injected"] for error in response.errors)
    calls = [(e.op, e.outcome) for e in server.events()[2:]]
    assert sorted(calls) == [
        ("check_many", "unavailable"),
        ("check_many", "unavailable"),
        ("features_of", "ok"),
        ("revision", "ok"),
    ]


async def test_one_refused_mutation_does_not_hide_the_next(start_server: StartServer) -> None:
    server = await start_server(failing(every_nth=2, operations=["writes"]))
    response = await server.gql(
        """mutation {
          one: addFeature(resource: {type: "app", id: "x"}, feature: "f") { __typename }
          two: addFeature(resource: {type: "app", id: "y"}, feature: "f") { __typename }
          three: addFeature(resource: {type: "app", id: "z"}, feature: "f") { __typename }
        }"""
    )
    assert response.status == 200
    assert response.data == {
        "one": {"__typename": "FeatureChange"},
        "two": None,
        "three": {"__typename": "FeatureChange"},
    }
    assert [(e["path"], e["extensions"]["code"]) for e in response.errors] == [
        (["two"], "STORE_UNAVAILABLE")
    ]


# -- a stalled store --------------------------------------------------------------------

STALL_QUERIES = [
    (HAS, {"r": app(1), "f": "f"}),
    (ADD, {"r": app(1), "f": "f"}),
    ('{ resource(type: "app", id: "app-1") { features hasFeature(feature: "f") } }', None),
    ('{ checks(items: [{resource: {type: "a", id: "1"}, feature: "f"}]) { enabled } }', None),
    ('{ feature(name: "f") { resources { edges { cursor } } } }', None),
    ("{ revision changes { revision } }", None),
]


async def test_a_stalled_store_answers_every_request_by_the_deadline(
    start_server: StartServer,
) -> None:
    deadline = 0.2
    server = await start_server(slow(stall=True), deadline=deadline, admin_token=TOKEN)

    async def timed(query: str, variables: dict[str, Any] | None) -> tuple[float, Any]:
        started = time.perf_counter()
        response = await server.gql(query, variables)
        return time.perf_counter() - started, response

    results = await asyncio.gather(*(timed(q, v) for q, v in STALL_QUERIES * 5))
    for seconds, response in results:
        assert seconds < deadline + 2.0, "a request hung on the stalled store"
        assert response.status == 200
        assert response.codes, response.body
        assert set(response.codes) == {"STORE_TIMEOUT"}, response.body
        assert all(error["extensions"]["injected"] for error in response.errors)
    events = server.events()
    assert events
    assert all((e.outcome, e.injected) == ("timeout", True) for e in events)
    async with server.session.get(f"{server.url}/healthz") as health:
        assert health.status == 200

    # The stall ends: the next requests are answered, and correctly.
    status, state = await admin(server, {"stall": False})
    assert (status, state["stores"][0]["stall"]) == (200, False)
    added = await server.gql(ADD, {"r": app(1), "f": "f"})
    assert added.data == {"addFeature": {"changed": True, "revision": 1}}
    answered = await server.gql(STALL_QUERIES[2][0])
    assert answered.data == {"resource": {"features": ["f"], "hasFeature": True}}


async def test_a_slow_store_within_the_deadline_changes_no_answer(
    start_server: StartServer,
) -> None:
    server = await start_server(slow(delay_ms=5, jitter_ms=5, seed=3), deadline=1.0)
    await asyncio.gather(*(server.gql(ADD, {"r": app(i), "f": "f"}) for i in range(20)))
    response = await server.gql('{ feature(name: "f") { resources { edges { cursor } } } }')
    assert len(response.data["feature"]["resources"]["edges"]) == 20
    assert all(e.outcome == "ok" for e in server.events())


# -- concurrent writers -----------------------------------------------------------------


async def test_200_concurrent_writers_lose_no_acknowledged_write(
    start_server: StartServer,
) -> None:
    # The slow layer keeps each write in flight for a few ms, so writers overlap.
    store = failing(
        concurrent_writes=True,
        inner=slow(delay_ms=2, jitter_ms=3, seed=5, operations=["writes"]),
    )
    tables, secrets = make_tokens(**{f"w{n}": "read,write" for n in range(4)})
    server = await start_server(store, auth_tokens=tables)

    async def write(i: int) -> GraphQLResponse:
        return await server.gql(ADD, {"r": app(i), "f": "f"}, headers=bearer(secrets[f"w{i % 4}"]))

    responses = await asyncio.gather(*(write(i) for i in range(200)))
    acknowledged: dict[int, int] = {}
    refused: set[int] = set()
    for i, response in enumerate(responses):
        answer = response.data["addFeature"]
        if answer is None:
            assert_injected_error(response, "STORE_CONFLICT")
            refused.add(i)
        else:
            assert response.errors == []
            assert answer["changed"] is True
            acknowledged[i] = answer["revision"]
    assert len(acknowledged) + len(refused) == 200
    assert acknowledged, "the drill needs acknowledged writes"
    assert refused, "the drill needs refused writes"
    assert sorted(acknowledged.values()) == list(range(1, len(acknowledged) + 1))
    failing_store = server.service.store
    assert isinstance(failing_store, FailingStore)
    assert failing_store.fault_state()["injected"]["concurrent_writes"] == len(refused)

    # The store holds exactly the acknowledged writes, and so does the change log.
    async def final_state() -> tuple[set[str], dict[int, tuple[str, str]]]:
        holders = await server.gql(
            '{ feature(name: "f") { resources(first: 1000) { edges { node { id } } } } }',
            headers=bearer(secrets["w0"]),
        )
        log = await server.gql(
            "{ changes(first: 1000) { revision actor resource { id } } }",
            headers=bearer(secrets["w0"]),
        )
        ids = {edge["node"]["id"] for edge in holders.data["feature"]["resources"]["edges"]}
        changes = {c["revision"]: (c["resource"]["id"], c["actor"]) for c in log.data["changes"]}
        return ids, changes

    ids, changes = await final_state()
    assert ids == {f"app-{i}" for i in acknowledged}
    assert changes == {rev: (f"app-{i}", f"w{i % 4}") for i, rev in acknowledged.items()}

    # Refused writes were refused, not half-done: retried one at a time, they all land.
    for i in sorted(refused):
        retried = await write(i)
        assert retried.data["addFeature"]["changed"] is True
    ids, changes = await final_state()
    assert ids == {f"app-{i}" for i in range(200)}
    assert len(changes) == 200


# -- outages and the admin endpoint ------------------------------------------------------


async def test_an_outage_switched_on_and_off_at_runtime(start_server: StartServer) -> None:
    server = await start_server(failing(), admin_token=TOKEN)
    assert (await server.gql(ADD, {"r": app(1), "f": "f"})).errors == []

    status, state = await admin(server, {"outage": True})
    assert status == 200
    assert state["stores"][0]["outage"] == {"active": True, "remaining_seconds": None}
    for query, variables in STALL_QUERIES:
        response = await server.gql(query, variables)
        assert response.status == 200
        assert set(response.codes) == {"STORE_UNAVAILABLE"}, response.body
    async with server.session.get(f"{server.url}/readyz") as ready:
        assert ready.status == 503

    status, state = await admin(server, {"outage": False})
    assert state["stores"][0]["outage"] == {"active": False}
    assert (await server.gql(HAS, {"r": app(1), "f": "f"})).data == {"hasFeature": True}
    async with server.session.get(f"{server.url}/readyz") as ready:
        assert ready.status == 200

    # A timed outage ends by itself.
    status, state = await admin(server, {"outage_seconds": 0.5})
    assert state["stores"][0]["outage"]["active"] is True
    assert_injected_error(await server.gql(HAS, {"r": app(1), "f": "f"}), "STORE_UNAVAILABLE")
    await asyncio.sleep(0.55)
    assert (await server.gql(HAS, {"r": app(1), "f": "f"})).data == {"hasFeature": True}


async def test_admin_changes_the_error_rate_and_reports_counts(start_server: StartServer) -> None:
    server = await start_server(
        failing(inner=slow(delay_ms=1)), admin_token=TOKEN, loggers=("failing",)
    )
    status, state = await admin(server)
    assert status == 200
    assert [(s["path"], s["plugin"], s["name"]) for s in state["stores"]] == [
        ("store", "failing", "failing(slow(memory))"),
        ("store.inner", "slow", "slow(memory)"),
    ]
    status, state = await admin(server, {"error_rate": 1, "operations": "reads"})
    assert (state["stores"][0]["error_rate"], state["stores"][0]["operations"][0]) == (
        1.0,
        "changes_since",
    )
    assert_injected_error(await server.gql(HAS, {"r": app(1), "f": "f"}), "STORE_UNAVAILABLE")
    assert (await server.gql(ADD, {"r": app(1), "f": "f"})).errors == []

    status, state = await admin(server, {"store": "slow", "delay_ms": 0})
    assert state["stores"][1]["delay_ms"] == 0
    server.service.dispatcher.flush()
    status, state = await admin(server)
    assert state["stores"][0]["injected"]["error_rate"] == 1
    # One per operation event: the catalog's load at start-up (revision, list_features),
    # then the refused read and the add.
    assert state["sinks"]["failures"] == {"failing": 4}


@pytest.mark.parametrize(
    ("token", "headers", "body", "status", "code"),
    [
        (None, AUTH, None, 403, "ADMIN_DISABLED"),
        (None, AUTH, {"outage": True}, 403, "ADMIN_DISABLED"),
        (TOKEN, {}, {"outage": True}, 401, "UNAUTHENTICATED"),
        (TOKEN, {"Authorization": "Bearer wrong"}, None, 401, "UNAUTHENTICATED"),
        (TOKEN, {"Authorization": TOKEN}, None, 401, "UNAUTHENTICATED"),
        (TOKEN, AUTH, {"error_rate": 2}, 400, "BAD_REQUEST"),
        (TOKEN, AUTH, {"nope": 1}, 400, "BAD_REQUEST"),
        (TOKEN, AUTH, {"store": "cached", "outage": True}, 400, "BAD_REQUEST"),
        (TOKEN, AUTH, {}, 400, "BAD_REQUEST"),
    ],
)
async def test_admin_refuses_what_it_must(
    start_server: StartServer,
    token: str | None,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    server = await start_server(failing(), admin_token=token)
    answer = await admin(server, body, headers)
    assert answer[0] == status
    assert answer[1]["errors"][0]["extensions"]["code"] == code
    store = server.service.store
    assert isinstance(store, FailingStore)
    assert not store.outage_active()


async def test_admin_without_a_fault_store_says_so(start_server: StartServer) -> None:
    server = await start_server("memory", admin_token=TOKEN)
    assert await admin(server) == (200, {"stores": [], "sinks": {"failures": {}, "dropped": 0}})
    status, body = await admin(server, {"outage": True})
    assert (status, body["errors"][0]["extensions"]["code"]) == (404, "NO_FAULT_STORE")


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(env={"FEATURES_GQL_ADMIN_TOKEN": "secret"})
    assert load_settings(env={"FEATURES_GQL_ADMIN_TOKEN": TOKEN}).admin_token == TOKEN
    assert TOKEN not in repr(load_settings(env={"FEATURES_GQL_ADMIN_TOKEN": TOKEN}))


# -- slow and failing loggers -----------------------------------------------------------


async def test_slow_and_failing_loggers_never_touch_a_request(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="features_gql.events")
    server = await start_server("memory", loggers=("slow", "failing"))
    slow_logger, failing_logger = server.service.loggers
    assert isinstance(slow_logger, SlowLogger)
    assert isinstance(failing_logger, FailingLogger)
    # The start-up's own store calls (the catalog's load) reached both sinks already.
    at_start = slow_logger.handled
    assert server.service.dispatcher.health.failures == {"failing": at_start}
    requests = 20
    for i in range(requests):
        added = await server.gql(ADD, {"r": app(i), "f": "f"})
        assert added.data == {"addFeature": {"changed": True, "revision": i + 1}}
    # Every request was answered while the slow sink was still behind: none waited for it.
    assert slow_logger.handled < at_start + requests
    assert server.service.dispatcher.flush(timeout=10)
    assert slow_logger.handled == at_start + requests
    assert server.service.dispatcher.health.failures == {"failing": at_start + requests}
    reports = [r for r in caplog.records if "'failing' failed" in r.getMessage()]
    assert len(reports) == 1, "a failing sink is reported once, then counted"


# -- configuration: TOML composition and the command-line shorthand -----------------------


def test_toml_composes_failing_slow_sqlite(tmp_path: Any) -> None:
    config = tmp_path / "drill.toml"
    config.write_text(
        f"""
        [store]
        plugin = "failing"
        error_rate = 0.2
        seed = 7
        [store.inner]
        plugin = "slow"
        delay_ms = 30
        [store.inner.inner]
        plugin = "sqlite"
        path = "{tmp_path / "f.db"}"
        """
    )
    settings = from_toml(config)
    assert isinstance(settings.store, dict)
    store = StoreBuilder(collect(create_plugin_manager()).stores).build(settings.store)
    assert store.name == "failing(slow(sqlite))"


def test_the_command_line_shorthand_wraps_the_store() -> None:
    table = wrap_store(
        "sqlite:///tmp/x.db",
        fault=["error_rate=0.2", "seed=7", "operations=writes", "concurrent_writes=true"],
        latency=["delay_ms=30", 'operations=["add", "remove"]'],
    )
    assert table == {
        "plugin": "failing",
        "error_rate": 0.2,
        "seed": 7,
        "operations": "writes",
        "concurrent_writes": True,
        "inner": {
            "plugin": "slow",
            "delay_ms": 30,
            "operations": ["add", "remove"],
            "inner": "sqlite:///tmp/x.db",
        },
    }
    assert isinstance(table, dict)
    store = StoreBuilder(collect(create_plugin_manager()).stores).build(table)
    assert store.name == "failing(slow(sqlite))"
    assert wrap_store(None, fault=["outage=true"]) == failing(
        inner={"plugin": "sqlite"}, outage=True
    )
    assert wrap_store("memory") == "memory"


def test_the_command_line_shorthand_reaches_serve_settings() -> None:
    from features_gql.cli import _parser, _settings

    args = _parser().parse_args(
        ["serve", "--store", "memory", "--fault", "error_rate=0.5", "--latency", "stall=true"]
    )
    settings: Settings = _settings(args)
    assert settings.store == failing(inner=slow(stall=True), error_rate=0.5)


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("error_rate", "KEY=VALUE"),
        ("=0.2", "KEY=VALUE"),
        ("inner=memory", "cannot set 'inner'"),
        ("plugin=memory", "cannot set 'plugin'"),
    ],
)
def test_bad_shorthand_is_named(pair: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_assignments([pair], "--fault")
