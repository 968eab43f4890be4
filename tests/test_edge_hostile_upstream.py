"""An edge following an upstream that answers what it should not: a fake upstream (a real
aiohttp server on 127.0.0.1 speaking GraphQL over HTTP and ``graphql-transport-ws``)
answers the edge's queries and subscription, sanely or as each test tells it to.

Each case checks that the edge keeps answering from its copy (GraphQL and OFREP), loses
nothing, says what is wrong (``syncStatus``, ``/readyz``), logs a few lines rather than a
line per retry, does not spin, and follows again once the upstream is sane.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from features_gql import edge as edge_module
from tests.conftest import Server, StartServer
from tests.test_edge import has, sync_of, until

AT = "2026-01-01T00:00:00+00:00"
STATUS = "{ syncStatus { revision upstreamRevision connected state lastError } }"


def event(revision: Any, op: str = "ADD", id_: str = "p3", feature: str = "beta") -> dict[str, Any]:
    resource = None if op in ("DEFINE", "ARCHIVE") else {"type": "pipeline", "id": id_}
    return {
        "revision": revision,
        "op": op,
        "resource": resource,
        "feature": feature,
        "actor": "someone",
        "at": AT,
    }


Answer = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class FakeUpstream:
    """Answers like a features-gql service holding ``log`` (assignment changes of the
    live feature ``beta``), unless a hostile answer is set."""

    log: list[dict[str, Any]] = field(
        default_factory=lambda: [event(1, id_="p1"), event(2, id_="p2")]
    )
    #: Hostile overrides: the answer to ``{ revision }``, the events pushed on every
    #: subscription (verbatim), a snapshot page, a catalog page (given the variables).
    revision: Any = None
    stream: list[Any] | None = None
    snapshot: Answer | None = None
    catalog: Answer | None = None
    requests: int = 0
    url: str = ""
    runner: web.AppRunner | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def sane(self) -> None:
        self.revision = self.stream = self.snapshot = self.catalog = None

    def head(self) -> int:
        return int(self.log[-1]["revision"]) if self.log else 0

    def assignments(self) -> list[list[str]]:
        held: set[tuple[str, str, str]] = set()
        for change in self.log:
            key = (change["resource"]["type"], change["resource"]["id"], change["feature"])
            (held.add if change["op"] == "ADD" else held.discard)(key)
        return [list(key) for key in sorted(held)]

    def answer(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        if name == "EdgeRevision":
            return {"revision": self.head() if self.revision is None else self.revision}
        if name == "EdgeChanges":
            after, first = variables["after"], variables["first"]
            return {"changes": [c for c in self.log if c["revision"] > after][:first]}
        if name == "EdgeSnapshot":
            if self.snapshot is not None:
                return self.snapshot(variables)
            rows = self.assignments()
            return {
                "snapshot": {
                    "revision": self.head(),
                    "assignments": rows if variables["after"] is None else [],
                    "endCursor": "end",
                    "hasNextPage": False,
                }
            }
        if name == "EdgeCatalog":
            if self.catalog is not None:
                return self.catalog(variables)
            return {
                "features": {
                    "edges": [{"node": {"name": "beta"}}],
                    "pageInfo": {"hasNextPage": False, "endCursor": None},
                }
            }
        raise AssertionError(f"the edge asked for {name}")

    async def graphql(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.subscription(request)
        body = await request.json()
        name = body["query"].split()[1].split("(")[0]
        data = self.answer(name, body.get("variables") or {})
        return web.Response(body=orjson.dumps({"data": data}), content_type="application/json")

    async def subscription(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("graphql-transport-ws",))
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await self.serve(ws)
        finally:
            self.sockets.discard(ws)
        return ws

    async def drop(self) -> None:
        """End every subscription: the edge connects again, and meets the new answers."""
        for ws in list(self.sockets):
            await ws.close()

    async def serve(self, ws: web.WebSocketResponse) -> None:
        pushing: list[asyncio.Task[None]] = []
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                data = orjson.loads(message.data)
                if data["type"] == "connection_init":
                    await ws.send_str('{"type":"connection_ack"}')
                elif data["type"] == "subscribe":
                    after = data["payload"]["variables"]["after"]
                    pushing.append(asyncio.create_task(self.push(ws, data["id"], after)))
        finally:
            for task in pushing:
                task.cancel()

    async def push(self, ws: web.WebSocketResponse, id_: str, after: int) -> None:
        """The hostile ``stream`` if set, else the log after ``after`` and then each
        change appended to it."""

        async def send(item: Any) -> None:
            message = {"id": id_, "type": "next", "payload": {"data": {"featureChanges": item}}}
            await ws.send_str(orjson.dumps(message).decode())

        if self.stream is not None:
            for item in self.stream:
                await send(item)
            return
        sent = after
        while not ws.closed:
            for change in [c for c in self.log if c["revision"] > sent]:
                await send(change)
                sent = change["revision"]
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/graphql", self.graphql)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/graphql"

    async def stop(self) -> None:
        if self.runner is not None:
            # No new connections, then the subscriptions end: a server that stops waits for
            # its open WebSockets, which an edge still following would hold open until its
            # heartbeat gave up on the stopping server (seconds per test).
            for site in list(self.runner.sites):
                await site.stop()
            await self.drop()
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seconds rather than half a minute, so that a test sees the recovery.
    monkeypatch.setattr(edge_module, "MALFORMED_MAX_BACKOFF", 2.0)


async def ofrep(edge: Server, key: str, id_: str) -> tuple[int, Any]:
    context = {"context": {"targetingKey": id_, "resourceType": "pipeline"}}
    async with edge.session.post(
        f"{edge.url}/ofrep/v1/evaluate/flags/{key}", json=context
    ) as response:
        return response.status, await response.json()


async def synced_edge(start_server: StartServer, fake: FakeUpstream, **settings: Any) -> Server:
    edge = await start_server("memory", upstream=fake.url, catalog_strict=True, **settings)
    await until(lambda: _at(edge, fake.head()), "the snapshot")
    return edge


async def _at(edge: Server, revision: int) -> bool:
    return sync_of(edge).revision == revision and sync_of(edge).status().connected


async def status(edge: Server) -> dict[str, Any]:
    answer = await edge.gql(STATUS)
    assert not answer.errors, answer.errors
    result: dict[str, Any] = answer.data["syncStatus"]
    return result


async def readyz(edge: Server) -> tuple[int, Any]:
    async with edge.session.get(f"{edge.url}/readyz") as response:
        return response.status, await response.json()


async def hostile(
    edge: Server, fake: FakeUpstream, caplog: pytest.LogCaptureFixture, expected: str
) -> None:
    """The edge refuses what the fake sends, keeps serving, says why, logs little and
    does not spin; then follows again once the fake is sane."""

    async def refused() -> bool:
        return sync_of(edge).condition == "malformed"

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="features_gql"):
        await until(refused, "the edge refusing its upstream")
        requests_before = fake.requests
        started = time.monotonic()
        await asyncio.sleep(3.0)
        window = time.monotonic() - started
        requests = fake.requests - requests_before
        # Reads answer from the copy, which lost nothing.
        assert await has(edge, "p1", "beta") is True
        assert await has(edge, "p2", "beta") is True
        code, answer = await ofrep(edge, "beta", "p1")
        assert (code, answer["value"]) == (200, True)
        code, answer = await ofrep(edge, "gamma", "p1")
        assert (code, answer["errorCode"]) == (404, "FLAG_NOT_FOUND")
        # It says what is wrong.
        now = await status(edge)
        assert now["connected"] is False
        assert now["state"] == "MALFORMED"
        assert expected in now["lastError"], now["lastError"]
        code, body = await readyz(edge)
        assert code == 200  # it serves its copy
        assert body["upstream"]["state"] == "malformed"
        assert expected in body["upstream"]["last_error"]
        lines = [r for r in caplog.records if r.levelno >= logging.INFO and not _request_log(r)]
    # A few lines, not one per retry; and a few attempts in the window, not a spin.
    assert len(lines) <= 4, [r.getMessage() for r in lines]
    assert sum(len(r.getMessage()) for r in lines) < 4000
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    assert requests <= 8 * window, requests
    # Sane again: it follows, and says so once.
    fake.sane()
    fake.log.append(event(fake.head() + 1, id_="p9"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="features_gql.edge"):
        await until(lambda: has(edge, "p9", "beta"), "the recovery")
        await until(lambda: _following(edge), "following again")
    now = await status(edge)
    assert (now["connected"], now["state"], now["lastError"]) == (True, "FOLLOWING", None)
    assert any("again" in r.getMessage() for r in caplog.records)
    assert await has(edge, "p1", "beta") is True


def _request_log(record: logging.LogRecord) -> bool:
    return record.name in ("features_gql.request", "features_gql.http")


async def _following(edge: Server) -> bool:
    return bool((await status(edge))["connected"])


async def test_a_sane_fake_is_followed(start_server: StartServer, fake: FakeUpstream) -> None:
    edge = await synced_edge(start_server, fake)
    fake.log.append(event(3, id_="p3"))
    await until(lambda: has(edge, "p3", "beta"), "the pushed change")
    assert (await status(edge))["state"] == "FOLLOWING"


async def test_an_unknown_op_is_refused_and_deletes_nothing(
    start_server: StartServer, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await synced_edge(start_server, fake)
    # A newer upstream's op this edge does not know, on a key the copy holds.
    fake.stream = [event(3, op="RENAME", id_="p1")]
    await fake.drop()
    await hostile(edge, fake, caplog, "featureChanges.op")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"at": None}, "featureChanges.at"),
        ({"feature": 5}, "featureChanges.feature"),
        ({"resource": {"type": "pipeline"}}, "featureChanges.resource.id"),
        ({"resource": None}, "featureChanges.resource"),
        ({"feature": "Not A Slug"}, "featureChanges.feature"),
    ],
)
async def test_a_malformed_event_is_refused(
    start_server: StartServer,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    bad: dict[str, Any],
    expected: str,
) -> None:
    edge = await synced_edge(start_server, fake)
    change = {**event(3, op="REMOVE", id_="p1"), **bad}
    if bad == {"at": None}:
        del change["at"]  # missing, not null
    fake.stream = [change]
    await fake.drop()
    await hostile(edge, fake, caplog, expected)


@pytest.mark.parametrize("revision", [2**53, 2**63, -1, 3.0, True, "3"])
async def test_a_revision_out_of_range_is_refused(
    start_server: StartServer, fake: FakeUpstream, caplog: pytest.LogCaptureFixture, revision: Any
) -> None:
    edge = await synced_edge(start_server, fake)
    fake.stream = [event(revision, op="REMOVE", id_="p1")]
    await fake.drop()
    await hostile(edge, fake, caplog, "featureChanges.revision")
    assert sync_of(edge).revision == fake.head()


async def test_an_upstream_revision_past_2_53_is_refused(
    start_server: StartServer, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await synced_edge(start_server, fake)
    fake.revision = 2**53
    fake.stream = []  # and nothing pushed: the answer to { revision } alone is wrong
    await fake.drop()
    await hostile(edge, fake, caplog, "revision")


@pytest.mark.parametrize("second", [3, 2], ids=["repeated", "backwards"])
async def test_revisions_that_do_not_increase_are_refused(
    start_server: StartServer, fake: FakeUpstream, caplog: pytest.LogCaptureFixture, second: int
) -> None:
    edge = await synced_edge(start_server, fake)
    fake.log.append(event(3, id_="p3"))
    await until(lambda: has(edge, "p3", "beta"), "the change")
    # Pushed after the copy's revision 3: a good change, then one going back.
    fake.log.append(event(4, id_="p4"))
    fake.stream = [event(4, id_="p4"), event(second, op="REMOVE", id_="p1")]
    await fake.drop()
    await hostile(edge, fake, caplog, "revisions must increase")
    assert await has(edge, "p4", "beta") is True  # the good change before the bad one


def _same_page(variables: dict[str, Any]) -> dict[str, Any]:
    rows = [["pipeline", "p1", "beta"], ["pipeline", "p2", "beta"]]
    return {"snapshot": {"revision": 2, "assignments": rows, "endCursor": "c", "hasNextPage": True}}


def _empty_pages(variables: dict[str, Any]) -> dict[str, Any]:
    page = {"revision": 2, "assignments": [], "endCursor": "c", "hasNextPage": True}
    if variables["after"] is None:
        page["assignments"] = [["pipeline", "p1", "beta"], ["pipeline", "p2", "beta"]]
    return {"snapshot": page}


def _same_catalog_page(variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "features": {
            "edges": [{"node": {"name": "beta"}}],
            "pageInfo": {"hasNextPage": True, "endCursor": "c"},
        }
    }


@pytest.mark.parametrize(
    ("snapshot", "catalog", "expected"),
    [
        (_same_page, None, "snapshot.assignments[0]"),
        (_empty_pages, None, "snapshot.endCursor"),
        (None, _same_catalog_page, "features.pageInfo.endCursor"),
    ],
    ids=["snapshot-repeats", "snapshot-empty-pages", "catalog-repeats"],
)
async def test_endless_paging_is_refused(
    start_server: StartServer,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    snapshot: Answer | None,
    catalog: Answer | None,
    expected: str,
) -> None:
    edge = await synced_edge(start_server, fake)
    fake.snapshot, fake.catalog = snapshot, catalog
    # The upstream says it went back to revision 1 (restored from a backup): the edge
    # resyncs, and the resync's pages never end.
    fake.revision = 1
    await fake.drop()
    await hostile(edge, fake, caplog, expected)


async def test_revisions_past_2_31_round_trip_through_an_edge(
    start_server: StartServer, fake: FakeUpstream
) -> None:
    big = 2**31
    fake.log = [event(big + 1, id_="p1"), event(big + 2, id_="p2")]
    edge = await synced_edge(start_server, fake)
    now = await status(edge)
    assert (now["revision"], now["upstreamRevision"]) == (big + 2, big + 2)
    fake.log.append(event(2**53 - 1, id_="p3"))
    await until(lambda: has(edge, "p3", "beta"), "the change at 2^53 - 1")
    assert (await status(edge))["revision"] == 2**53 - 1


async def test_an_edge_restarted_with_its_upstream_down_serves_its_catalog(
    start_server: StartServer, fake: FakeUpstream, tmp_path: Path
) -> None:
    path = f"sqlite://{tmp_path / 'edge.db'}"
    first = await start_server(path, upstream=fake.url, catalog_strict=True)
    await until(lambda: _at(first, 2), "the snapshot")
    # A define at the upstream moves the saved catalog with the position.
    fake.log.append(event(3, op="DEFINE", feature="gamma"))
    await until(lambda: _at(first, 3), "the define")
    await first.stop()
    url = fake.url
    await fake.stop()

    edge = await start_server(path, upstream=url, catalog_strict=True)
    assert await has(edge, "p1", "beta") is True
    code, answer = await ofrep(edge, "beta", "p1")
    assert (code, answer["value"]) == (200, True)
    code, answer = await ofrep(edge, "gamma", "p1")
    assert (code, answer["value"]) == (200, False)
    code, answer = await ofrep(edge, "delta", "p1")
    assert (code, answer["errorCode"]) == (404, "FLAG_NOT_FOUND")
    async with edge.session.post(
        f"{edge.url}/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "p2", "resourceType": "pipeline"}},
    ) as response:
        bulk = await response.json()
    assert [(flag["key"], flag["value"]) for flag in bulk["flags"]] == [
        ("beta", True),
        ("gamma", False),
    ]
    now = await status(edge)
    assert (now["revision"], now["connected"], now["state"]) == (3, False, "UNREACHABLE")


async def test_a_resync_applies_its_differences_in_bulk(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    primary = await start_server("memory")
    items = [(("pipeline", f"p{i:05}"), "beta") for i in range(5000)]
    await primary.service.api.add_many(items)
    with caplog.at_level(logging.INFO, logger="features_gql"):
        edge = await start_server("memory", upstream=f"{primary.url}/graphql")
        await until(lambda: _at(edge, 5000), "the snapshot")
    calls = [e for e in edge.events() if e.op in ("add", "remove", "add_many", "remove_many")]
    assert sorted(e.op for e in calls) == ["add_many"] * 3  # 2000 + 2000 + 1000
    assert sum(e.items for e in calls) == 5000
    assert await has(edge, "p04999", "beta") is True
    summaries = [r for r in caplog.records if r.getMessage().startswith("resynced from")]
    assert len(summaries) == 1
    assert "5000 added, 0 removed" in summaries[0].getMessage()
    edge_lines = [r for r in caplog.records if r.name.startswith("features_gql.edge")]
    assert len(edge_lines) <= 3, [r.getMessage() for r in edge_lines]
