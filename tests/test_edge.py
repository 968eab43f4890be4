"""The edge replica in one process with its upstream: real servers on 127.0.0.1.

The tests with real processes, kill -9 and restores from backups are in
tests/test_edge_processes.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from features_gql import FeaturesAPI
from features_gql.edge import EdgeSync
from features_gql.http import mount_graphql
from features_gql_plugins.memory_store import MemoryStore
from tests.conftest import Server, StartServer, bearer, make_tokens

HAS = 'query ($id: String!, $f: String!) { hasFeature(resource: {type: "pipeline", id: $id}, feature: $f) }'  # noqa: E501
STATUS = "{ syncStatus { revision upstreamRevision lagSeconds connected lastSyncedAt } revision }"


def mutation(op: str, id_: str, feature: str) -> str:
    return (
        f'mutation {{ {op}Feature(resource: {{type: "pipeline", id: "{id_}"}}, feature: '
        f'"{feature}") {{ ... on FeatureChange {{ changed revision }} }} }}'
    )


async def has(server: Server, id_: str, feature: str, **kw: Any) -> Any:
    answer = await server.gql(HAS, {"id": id_, "f": feature}, **kw)
    assert not answer.errors, answer.errors
    return answer.data["hasFeature"]


async def until(condition: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.01)


def sync_of(server: Server) -> EdgeSync:
    assert server.service.edge is not None
    return server.service.edge


async def test_edge_loads_follows_and_forwards(start_server: StartServer, tmp_path: Path) -> None:
    primary = await start_server("memory")
    for i in range(5):
        await primary.gql(mutation("add", f"p{i}", "speedups"))
    await primary.gql(mutation("remove", "p0", "speedups"))
    edge = await start_server(f"sqlite://{tmp_path / 'edge.db'}", upstream=f"{primary.url}/graphql")
    await until(lambda: _revision_is(edge, 6), "the snapshot")
    assert [await has(edge, f"p{i}", "speedups") for i in range(5)] == [False] + [True] * 4
    # Follows: a change at the primary reaches the edge.
    await primary.gql(mutation("add", "new", "beta"))
    await until(lambda: has(edge, "new", "beta"), "the change")
    # Writes at the edge go to the primary, and the edge reads its own write at once.
    answer = await edge.gql(mutation("add", "from-edge", "beta"))
    assert answer.data["addFeature"]["changed"] is True
    assert await has(edge, "from-edge", "beta") is True
    assert await has(primary, "from-edge", "beta") is True
    status = (await edge.gql(STATUS)).data["syncStatus"]
    assert status["revision"] == status["upstreamRevision"] == 8
    assert status["connected"] is True
    assert status["lagSeconds"] == 0
    assert status["lastSyncedAt"] is not None
    assert (await primary.gql(STATUS)).data["syncStatus"] is None
    # The actor of a forwarded write is the caller, as the upstream knows it.
    changes = await primary.gql("{ changes(after: 7) { actor } }")
    assert changes.data["changes"] == [{"actor": "anonymous"}]


async def _revision_is(edge: Server, revision: int) -> bool:
    return sync_of(edge).revision == revision


async def test_writes_fail_typed_while_the_upstream_is_down(
    start_server: StartServer, tmp_path: Path
) -> None:
    primary = await start_server("memory")
    await primary.gql(mutation("add", "p1", "speedups"))
    edge = await start_server(f"sqlite://{tmp_path / 'edge.db'}", upstream=f"{primary.url}/graphql")
    await until(lambda: _revision_is(edge, 1), "the snapshot")
    # The primary goes away: its port closes and its connections end.
    await primary.stop()
    answer = await edge.gql(mutation("add", "p2", "beta"))
    assert answer.data == {"addFeature": None}
    assert answer.codes == ["UPSTREAM_UNAVAILABLE"]
    assert "maybeApplied" not in answer.errors[0]["extensions"]
    # Reads still come from the copy.
    assert await has(edge, "p1", "speedups") is True
    await until(lambda: _disconnected(edge), "the edge noticing")
    status = (await edge.gql(STATUS)).data["syncStatus"]
    assert status["connected"] is False
    assert status["revision"] == 1
    async with edge.session.get(f"{edge.url}/readyz") as response:
        body = await response.json()
    assert response.status == 200
    assert body["upstream"]["connected"] is False
    assert body["upstream"]["staleness_seconds"] >= 0


async def _disconnected(edge: Server) -> bool:
    return not sync_of(edge).connected


async def test_tokens_edge_reads_with_its_own_and_writes_with_the_callers(
    start_server: StartServer, tmp_path: Path
) -> None:
    tables, secrets = make_tokens(edge="read", reader="read", writer="read,write")
    primary = await start_server("memory", auth_tokens=tables)
    edge = await start_server(
        "memory",
        upstream=f"{primary.url}/graphql",
        upstream_token=secrets["edge"],
        auth_tokens=tables,
    )
    await until(lambda: _revision_is(edge, 0), "the snapshot")
    answer = await edge.gql(mutation("add", "p1", "f"), headers=bearer(secrets["writer"]))
    assert answer.data["addFeature"]["changed"] is True
    changes = await primary.gql("{ changes { actor } }", headers=bearer(secrets["reader"]))
    assert changes.data["changes"] == [{"actor": "writer"}]
    # The edge's own token may not write upstream: a reader's forwarded write is refused
    # there with the upstream's own code (here the edge refuses it first, the same way).
    refused = await edge.gql(mutation("add", "p2", "f"), headers=bearer(secrets["reader"]))
    assert refused.codes == ["FORBIDDEN"]
    assert await has(edge, "p1", "f", headers=bearer(secrets["reader"])) is True


async def test_an_edge_follows_another_edge(start_server: StartServer, tmp_path: Path) -> None:
    primary = await start_server("memory")
    await primary.gql(mutation("add", "p1", "speedups"))
    first = await start_server(
        f"sqlite://{tmp_path / 'first.db'}", upstream=f"{primary.url}/graphql"
    )
    second = await start_server(
        f"sqlite://{tmp_path / 'second.db'}", upstream=f"{first.url}/graphql"
    )
    await until(lambda: has(second, "p1", "speedups"), "the chain's snapshot")
    await primary.gql(mutation("add", "p2", "speedups"))
    await until(lambda: has(second, "p2", "speedups"), "a change through the chain")
    # A write at the end of the chain reaches the primary and comes back down.
    answer = await second.gql(mutation("remove", "p1", "speedups"))
    assert answer.data["removeFeature"]["changed"] is True
    assert await has(second, "p1", "speedups") is False
    assert await has(primary, "p1", "speedups") is False


async def test_an_upstream_without_subscriptions_is_followed_by_polling(
    start_server: StartServer,
) -> None:
    # An application that embeds features-gql without a change feed: no WebSocket.
    api = FeaturesAPI(MemoryStore())
    app = web.Application()
    mount_graphql(app, api)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}/graphql"
    try:
        await api.add(("pipeline", "p1"), "speedups")
        edge = await start_server("memory", upstream=upstream)
        await until(lambda: has(edge, "p1", "speedups"), "the snapshot")
        await api.add(("pipeline", "p2"), "speedups")
        await until(lambda: has(edge, "p2", "speedups"), "a poll")
        assert sync_of(edge).mode == "polling"
    finally:
        await runner.cleanup()


async def test_max_staleness_and_the_edge_metrics(start_server: StartServer) -> None:
    primary = await start_server("memory")
    await primary.gql(mutation("add", "p1", "speedups"))
    edge = await start_server("memory", upstream=f"{primary.url}/graphql", max_staleness=0.3)
    await until(lambda: _revision_is(edge, 1), "the snapshot")
    async with edge.session.get(f"{edge.url}/readyz") as response:
        assert response.status == 200
    await primary.stop()
    await until(lambda: _disconnected(edge), "the edge noticing")
    await asyncio.sleep(0.4)
    async with edge.session.get(f"{edge.url}/readyz") as response:
        body = await response.json()
    assert response.status == 503
    assert body["reason"].startswith("the copy is ")
    assert "max_staleness 0.3 s" in body["reason"]
    assert await has(edge, "p1", "speedups") is True  # not ready, but still answering
    async with edge.session.get(f"{edge.url}/metrics") as response:
        metrics = await response.text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("features_gql_edge_")
    }
    assert values["features_gql_edge_connected"] == 0
    assert values["features_gql_edge_lag_seconds"] > 0.3
    assert values["features_gql_edge_revision"] == 1
    assert values["features_gql_edge_reconnects_total"] >= 1
    assert values["features_gql_edge_resyncs_total"] == 1


async def test_an_edge_that_never_synced_is_not_ready(start_server: StartServer) -> None:
    edge = await start_server("memory", upstream="http://127.0.0.1:9/graphql")
    async with edge.session.get(f"{edge.url}/readyz") as response:
        body = await response.json()
    assert response.status == 503
    assert body["reason"] == "no copy of the upstream yet"
    status = (await edge.gql(STATUS)).data["syncStatus"]
    assert status == {
        "revision": None,
        "upstreamRevision": None,
        "lagSeconds": None,
        "connected": False,
        "lastSyncedAt": None,
    }


async def test_an_edge_follows_past_catalog_changes_and_refuses_catalog_writes(
    start_server: StartServer, tmp_path: Path
) -> None:
    primary = await start_server("memory")
    await primary.gql(mutation("add", "p1", "beta"))
    define = 'mutation { defineFeature(input: {name: "beta", owner: "ops"}) { __typename } }'
    assert (await primary.gql(define)).data["defineFeature"]["__typename"] == (
        "FeatureDefinitionChange"
    )
    edge = await start_server(f"sqlite://{tmp_path / 'edge.db'}", upstream=f"{primary.url}/graphql")
    await until(lambda: _revision_is(edge, 2), "the snapshot")
    # A define or archive names no resource: the edge moves past it and copies no assignment.
    archive = 'mutation { archiveFeature(name: "beta") { __typename } }'
    await primary.gql(archive)
    await primary.gql(mutation("add", "p2", "beta"))
    await until(lambda: _revision_is(edge, 4), "the changes")
    assert [await has(edge, p, "beta") for p in ("p1", "p2", "p3")] == [True, True, False]
    # The edge forwards only addFeature and removeFeature: other writes are refused, typed.
    for query in (define, archive):
        answer = await edge.gql(query)
        assert answer.errors
        assert answer.errors[0]["extensions"]["code"] == "NOT_SUPPORTED"
    bulk = (
        'mutation { addFeatures(items: [{resource: {type: "pipeline", id: "p3"}, '
        'feature: "beta"}]) { __typename } }'
    )
    answer = await edge.gql(bulk)
    assert answer.errors
    assert answer.errors[0]["extensions"]["code"] == "NOT_SUPPORTED"
    assert await has(primary, "p3", "beta") is False


async def _ofrep(edge: Server, key: str, id_: str) -> tuple[int, Any]:
    context = {"context": {"targetingKey": id_, "resourceType": "pipeline"}}
    async with edge.session.post(
        f"{edge.url}/ofrep/v1/evaluate/flags/{key}", json=context
    ) as response:
        return response.status, await response.json()


async def test_an_edge_evaluates_flags_against_the_upstreams_catalog(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The copy holds assignments only; OFREP at the edge still knows which features the
    upstream defines, and follows its defines and archives."""
    primary = await start_server("memory")
    define = "mutation ($n: String!) { defineFeature(input: {name: $n}) { __typename } }"
    archive = "mutation ($n: String!) { archiveFeature(name: $n) { __typename } }"
    await primary.gql(define, {"n": "beta"})
    await primary.gql(mutation("add", "p1", "beta"))
    edge = await start_server(
        f"sqlite://{tmp_path / 'edge.db'}",
        upstream=f"{primary.url}/graphql",
        catalog_strict=True,
    )
    await until(lambda: _revision_is(edge, 2), "the snapshot")
    assert (await _ofrep(edge, "beta", "p1"))[1]["value"] is True
    status, answer = await _ofrep(edge, "gamma", "p1")
    assert (status, answer["errorCode"]) == (404, "FLAG_NOT_FOUND")

    await primary.gql(define, {"n": "gamma"})
    await until(lambda: _ofrep_status_is(edge, "gamma", 200), "the define")
    async with edge.session.post(
        f"{edge.url}/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "p2", "resourceType": "pipeline"}},
    ) as response:
        answer = await response.json()
    assert [(flag["key"], flag["value"]) for flag in answer["flags"]] == [
        ("beta", False),
        ("gamma", False),
    ]
    await primary.gql(archive, {"n": "beta"})
    await until(lambda: _ofrep_status_is(edge, "beta", 404), "the archive")


async def test_an_edge_that_never_reached_its_upstream_does_not_call_flags_unknown(
    start_server: StartServer, tmp_path: Path
) -> None:
    primary = await start_server("memory")
    upstream = f"{primary.url}/graphql"
    await primary.stop()
    edge = await start_server(
        f"sqlite://{tmp_path / 'edge.db'}", upstream=upstream, catalog_strict=True
    )
    status, answer = await _ofrep(edge, "beta", "p1")
    assert (status, answer["errorCode"]) == (503, "GENERAL")
    assert "catalog has not been loaded" in answer["errorDetails"]


async def _ofrep_status_is(edge: Server, key: str, status: int) -> bool:
    return (await _ofrep(edge, key, "p1"))[0] == status
