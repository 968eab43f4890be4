"""Every store call is bounded by the deadline and reported with what it asked and how it ended.

Real timeouts, injected ones and unexpected exceptions must each be told apart: in the
GraphQL error, in the operation event and in the metrics. Failures come from the
project's own fault-injection stores and the broken test stores, not from mocks.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from features_gql import FeaturesAPI, InvalidInput, Resource, StoreTimeout, StoreUnavailable
from features_gql.events import OperationEvent
from features_gql_plugins.failing_store import FailingSettings, FailingStore, Outage
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.slow_store import SlowSettings, SlowStore
from tests.broken_stores import BrokenStoresPlugin, BuggyStore, StalledStore
from tests.conftest import Server, StartServer
from tests.test_observability import scrape, value

HAS = "query ($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
P = {"type": "pipeline", "id": "p1"}
COUNT = "features_gql_store_operation_seconds_count"


async def test_a_real_timeout_is_reported_as_a_timeout_not_an_injected_one(
    start_server: StartServer,
) -> None:
    server = await start_server("stalled", extra_plugins=[BrokenStoresPlugin()], deadline=0.2)
    response = await server.gql(HAS, {"r": P, "f": "speedups"})
    assert response.data == {"hasFeature": None}
    assert response.codes == ["STORE_TIMEOUT"]
    assert "injected" not in response.errors[0]["extensions"]
    (event,) = server.events()
    assert (event.op, event.outcome, event.injected) == ("has", "timeout", False)
    assert event.error == "no answer within 0.2s"
    samples = await scrape(server)
    assert value(samples, COUNT, store="stalled", operation="has", outcome="timeout",
                 injected="false") == 1  # fmt: skip
    assert value(samples, COUNT, store="stalled", operation="has", outcome="timeout",
                 injected="true") == 0  # fmt: skip


async def test_a_timeout_caused_by_an_injected_stall_is_reported_as_injected(
    start_server: StartServer,
) -> None:
    server = await start_server(
        {"plugin": "slow", "stall": True, "operations": ["has"], "inner": "memory"}, deadline=0.2
    )
    response = await server.gql(HAS, {"r": P, "f": "speedups"})
    assert response.codes == ["STORE_TIMEOUT"]
    assert response.errors[0]["extensions"]["injected"] is True
    (event,) = server.events()
    assert (event.outcome, event.injected) == ("timeout", True)
    assert event.error == "no answer within 0.2s (injected delay)"
    # The next call on the same store is not stalled, and not marked.
    revision = await server.gql("{ revision }")
    assert revision.data == {"revision": 0}
    assert server.events()[-1].injected is False


async def test_an_unexpected_store_exception_is_counted_as_an_error(
    start_server: StartServer,
) -> None:
    server = await start_server("buggy", extra_plugins=[BrokenStoresPlugin()])
    response = await server.gql(HAS, {"r": P, "f": "speedups"})
    assert response.codes == ["INTERNAL_SERVER_ERROR"]
    (event,) = server.events()
    assert (event.op, event.outcome, event.injected) == ("has", "error", False)
    assert event.error == "KeyError: 'secret-internal-state'"
    samples = await scrape(server)
    assert value(samples, COUNT, store="buggy", operation="has", outcome="error",
                 injected="false") == 1  # fmt: skip
    assert value(samples, COUNT, store="buggy", operation="has", outcome="ok",
                 injected="false") == 0  # fmt: skip


async def test_every_store_call_is_reported_with_what_it_asked(server: Server) -> None:
    rid = {"X-Request-ID": "trace-1"}
    await server.gql(HAS, {"r": P, "f": "speedups"}, headers=rid)
    await server.gql(
        'mutation { addFeature(resource: {type: "app", id: "a/1"}, feature: "beta") '
        "{ __typename } }",
        headers=rid,
    )
    await server.gql(
        'mutation { removeFeature(resource: {type: "app", id: "a/1"}, feature: "beta") '
        "{ __typename } }",
        headers=rid,
    )
    await server.gql(
        "query ($items: [CheckInput!]!) { checks(items: $items) { enabled } }",
        {"items": [{"resource": P, "feature": "a"}, {"resource": P, "feature": "b"}]},
        headers=rid,
    )
    await server.gql(
        '{ feature(name: "beta") { resources(first: 5) { edges { cursor } } } }', headers=rid
    )
    started = time.perf_counter()
    await server.gql("{ revision changes(after: 0) { revision } }", headers=rid)
    elapsed = time.perf_counter() - started
    events = server.events()
    for event in events:
        assert (event.store, event.outcome, event.error, event.injected) == (
            "memory",
            "ok",
            None,
            False,
        )
        assert event.request_id == "trace-1"
    # A store call of a request cannot have lasted longer than the whole request.
    assert all(0 <= event.duration <= elapsed for event in events[-2:])
    asked = [(e.op, e.resource, e.feature, e.items) for e in events]
    assert asked[:5] == [
        ("has", "pipeline/p1", "speedups", 1),
        ("add", "app/a/1", "beta", 1),
        ("remove", "app/a/1", "beta", 1),
        ("check_many", None, None, 2),
        ("resources_with", None, "beta", 1),
    ]
    # revision and changes resolve side by side: either may reach the store first
    assert sorted(asked[5:]) == [
        ("changes_since", None, None, 1),
        ("revision", None, None, 1),
    ]


async def test_a_single_check_of_a_resource_field_is_reported_with_what_it_asked(
    server: Server,
) -> None:
    response = await server.gql(
        '{ resource(type: "pipeline", id: "p1") { on: hasFeature(feature: "speedups") } }'
    )
    assert response.data == {"resource": {"on": False}}
    assert [(e.op, e.resource, e.feature, e.items) for e in server.events()] == [
        ("has", "pipeline/p1", "speedups", 1)
    ]


# -- the Python API (embedded use) ----------------------------------------------------------


async def test_python_api_calls_are_reported_with_what_they_asked() -> None:
    events: list[OperationEvent] = []
    api = record(events)
    await api.has(("app", "a1"), "beta")
    await api.add(("app", "a1"), "beta", actor="alice")
    await api.remove(Resource("app", "a1"), "beta")
    assert [(e.op, e.resource, e.feature, e.items, e.outcome) for e in events] == [
        ("has", "app/a1", "beta", 1, "ok"),
        ("add", "app/a1", "beta", 1, "ok"),
        ("remove", "app/a1", "beta", 1, "ok"),
    ]


async def test_a_batch_of_checks_holds_up_to_10000_and_refuses_10001_together() -> None:
    events: list[OperationEvent] = []
    api = record(events)
    await api.add(("app", "a1"), "beta")
    batch = api.batch()
    answers = await asyncio.gather(*(batch.has(("app", f"a{i}"), "beta") for i in range(10_000)))
    assert answers[:3] == [False, True, False]
    assert (events[-1].op, events[-1].items) == ("check_many", 10_000)
    over = api.batch()
    refused = await asyncio.gather(
        *(over.has(("app", f"a{i}"), "beta") for i in range(10_001)), return_exceptions=True
    )
    assert all(isinstance(answer, InvalidInput) for answer in refused)
    first = refused[0]
    assert isinstance(first, InvalidInput)
    assert (first.field, first.rule) == ("hasFeature", "batch-size")
    assert str(first) == "hasFeature may hold at most 10000 entries (got 10001)"
    assert events[-1].items == 10_000, "the refused batch never reached the store"


def record(events: list[OperationEvent]) -> FeaturesAPI:
    return FeaturesAPI(MemoryStore(), on_event=events.append)


@pytest.mark.parametrize("deadline", [0, -1, -0.5])
def test_a_deadline_must_be_positive(deadline: float) -> None:
    with pytest.raises(ValueError, match=r"^deadline must be positive$"):
        FeaturesAPI(MemoryStore(), deadline=deadline)


async def test_a_real_timeout_after_an_injected_one_in_the_same_task_is_not_injected() -> None:
    # An injected stall in front of a store that really hangs: switch the stall off, and
    # the next call of the same task times out for real.
    slow = SlowStore(StalledStore(), SlowSettings(stall=True, operations=frozenset({"has"})))
    events: list[OperationEvent] = []
    api = FeaturesAPI(slow, deadline=0.05, on_event=events.append)
    with pytest.raises(StoreTimeout) as injected:
        await api.has(("a", "b"), "c")
    slow.change_faults({"stall": False})
    with pytest.raises(StoreTimeout) as real:
        await api.has(("a", "b"), "c")
    assert (injected.value.injected, real.value.injected) == (True, False)
    assert [e.injected for e in events] == [True, False]


async def test_the_deadline_bounds_a_store_that_never_answers() -> None:
    events: list[OperationEvent] = []
    api = FeaturesAPI(StalledStore(), deadline=0.05, on_event=events.append)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        await asyncio.wait_for(api.has(("a", "b"), "c"), 30)
    assert type(caught.value).__name__ == "StoreTimeout"
    assert str(caught.value) == "the store did not answer has within 0.05s"
    assert [(e.op, e.outcome) for e in events] == [("has", "timeout")]


async def test_writes_record_their_actor_in_the_change_log() -> None:
    api = FeaturesAPI(MemoryStore())
    await api.add(("app", "a1"), "beta", actor="alice")
    await api.remove(("app", "a1"), "beta", actor="bob")
    await api.add(Resource("app", "a1"), "beta")
    changes = await api.changes_since()
    assert [(c.revision, c.op, c.actor) for c in changes] == [
        (1, "add", "alice"),
        (2, "remove", "bob"),
        (3, "add", None),
    ]


async def test_changes_since_starts_at_the_beginning_and_answers_100_by_default() -> None:
    api = FeaturesAPI(MemoryStore())
    for i in range(101):
        await api.add(("app", f"a{i}"), "beta")
    changes = await api.changes_since()
    assert [c.revision for c in changes] == list(range(1, 101))
    assert [c.revision for c in await api.changes_since(100)] == [101]


async def test_resources_given_as_objects_are_validated_like_tuples() -> None:
    api = FeaturesAPI(MemoryStore())
    for call, field in (
        (api.has(Resource("Bad Type", "x"), "beta"), "resource.type"),
        (api.add(Resource("Bad Type", "x"), "beta"), "resource.type"),
        (api.remove(Resource("Bad Type", "x"), "beta"), "resource.type"),
        (
            api.features_of_many([Resource("app", "x"), Resource("Bad Type", "x")]),
            "resources[1].type",
        ),
        (
            api.check_many([(Resource("app", "x"), "a"), (Resource("Bad Type", "x"), "a")]),
            "items[1].resource.type",
        ),
    ):
        with pytest.raises(InvalidInput) as caught:
            await call
        assert (caught.value.field, caught.value.rule) == (field, "slug")
    with pytest.raises(InvalidInput) as indexed:
        await api.features_of_many([("app", "x"), ("app", "")])
    assert indexed.value.field == "resources[1].id"


async def test_empty_batches_answer_at_once_without_a_store_call() -> None:
    events: list[OperationEvent] = []
    api = record(events)
    assert await api.features_of_many([]) == []
    assert await api.check_many([]) == []
    assert await api.check_matrix("app", [], []) == []
    assert events == []


async def test_batches_answer_in_the_order_asked() -> None:
    events: list[OperationEvent] = []
    api = record(events)
    await api.add(("app", "b"), "x")
    await api.add(("app", "b"), "y")
    assert await api.features_of_many([("app", "a"), ("app", "b"), ("app", "a")]) == [
        [],
        ["x", "y"],
        [],
    ]
    assert await api.check_matrix("app", ["a", "b", "c"], ["y", "x"]) == [
        [False, False],
        [True, True],
        [False, False],
    ]
    assert [(e.op, e.items) for e in events[2:]] == [("features_of", 3), ("check_many", 6)]


# -- readiness probes -------------------------------------------------------------------


async def test_a_probe_of_a_healthy_store_is_up() -> None:
    started = time.perf_counter()
    probe = await FeaturesAPI(MemoryStore()).probe()
    elapsed = time.perf_counter() - started
    assert (probe.store, probe.up, probe.reason) == ("memory", True, None)
    assert 0 <= probe.seconds <= elapsed  # it measured itself, not something else


async def test_a_probe_tells_why_the_store_is_not_up(caplog: pytest.LogCaptureFixture) -> None:
    down = FailingStore(MemoryStore(), FailingSettings(operations=frozenset({"ping"})),
                        outage=Outage())  # fmt: skip
    stalled = SlowStore(MemoryStore(), SlowSettings(stall=True))
    for store, reason in ((down, "unavailable"), (stalled, "timeout"), (BuggyStore(), "error")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="features_gql.api"):
            probe = await FeaturesAPI(store, deadline=0.1).probe()
        assert (probe.store, probe.up, probe.reason) == (store.name, False, reason)
        logged = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
        if reason == "unavailable":
            # What went wrong is in the log (not in the probe's answer).
            with pytest.raises(StoreUnavailable) as refused:
                await store.ping()
            assert logged == [("WARNING", f"readiness probe failed: {refused.value}", False)]
        elif reason == "error":
            assert logged == [("ERROR", "readiness probe raised an unexpected error", True)]
        else:
            assert logged == []  # a timeout says all there is to say


@pytest.mark.parametrize(("within", "deadline"), [(0.05, 3600.0), (3600.0, 0.05)])
async def test_a_probe_of_a_hung_store_ends_at_the_shorter_of_its_limit_and_the_deadline(
    within: float, deadline: float
) -> None:
    api = FeaturesAPI(StalledStore(), deadline=deadline)
    probe = await asyncio.wait_for(api.probe(within), 30)  # a hang fails here, not a time
    assert (probe.up, probe.reason) == (False, "timeout")


async def test_probes_are_not_reported_as_operations() -> None:
    events: list[OperationEvent] = []
    await record(events).probe()
    assert events == []


async def test_a_store_error_is_raised_as_it_is_and_reported_once() -> None:
    events: list[OperationEvent] = []
    store = FailingStore(MemoryStore(), FailingSettings(every_nth=1))
    api = FeaturesAPI(store, on_event=events.append)
    with pytest.raises(StoreUnavailable) as caught:
        await api.add(("app", "a"), "beta", actor="alice")
    assert caught.value.injected is True
    (event,) = events
    assert (event.op, event.outcome, event.injected) == ("add", "unavailable", True)
    assert event.error == str(caught.value)
