"""The featureChanges subscription over WebSocket (graphql-transport-ws), driven by a
third-party client (gql with its websockets transport) against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from features_gql.domain import Resource
from features_gql.feed import CatchUpBudget, ChangeFeed
from features_gql.http.app import HOT_KEY
from features_gql.http.view import FeaturesGraphQLView
from features_gql_plugins.sqlite_store import SQLiteStore
from tests.conftest import Server, StartServer, bearer, make_tokens
from tests.test_cli import ADD, clean_env, post, serving  # noqa: F401 - a fixture

FOLLOW = """subscription Follow($after: Revision, $type: String, $feature: String) {
  featureChanges(after: $after, type: $type, feature: $feature) {
    revision op resource { type id } feature actor at
  }
}"""


def changes(**variables: Any) -> GraphQLRequest:
    return GraphQLRequest(FOLLOW, variable_values=variables)


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


def transport_to(server: Server, **options: Any) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=ws_url(server),
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        **options,
    )


async def write(server: Server, op: str, id_: str, feature: str, token: str | None = None) -> int:
    mutation = f"{op}Feature"
    answer = await server.gql(
        f'mutation {{ {mutation}(resource: {{type: "pipeline", id: "{id_}"}}, '
        f'feature: "{feature}") {{ ... on FeatureChange {{ revision }} }} }}',
        headers=bearer(token) if token else None,
    )
    assert not answer.errors, answer.errors
    return int(answer.data[mutation]["revision"])


async def take(stream: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for result in stream:
            got.append(result["featureChanges"])
            if len(got) == count:
                break
    return got


async def test_backlog_then_live_then_resume_without_gaps(start_server: StartServer) -> None:
    server = await start_server("memory")
    for i in range(3):
        await write(server, "add", f"p{i}", "speedups")
    async with Client(transport=transport_to(server)) as session:
        stream = session.subscribe(changes(after=0))
        backlog = await take(stream, 3)
        assert [e["revision"] for e in backlog] == [1, 2, 3]
        assert backlog[0]["resource"] == {"type": "pipeline", "id": "p0"}
        assert (backlog[0]["op"], backlog[0]["feature"], backlog[0]["actor"]) == (
            "ADD",
            "speedups",
            "anonymous",
        )
        await write(server, "remove", "p0", "speedups")
        live = await take(stream, 1)
        assert (live[0]["revision"], live[0]["op"]) == (4, "REMOVE")
        await stream.aclose()
    # Disconnected: what happens now must arrive on resuming after the last revision seen.
    for i in range(3):
        await write(server, "add", f"q{i}", "beta")
    async with Client(transport=transport_to(server)) as session:
        stream = session.subscribe(changes(after=live[-1]["revision"]))
        missed = await take(stream, 3)
        await write(server, "add", "q9", "beta")
        missed += await take(stream, 1)
        await stream.aclose()
    assert [e["revision"] for e in missed] == [5, 6, 7, 8]


async def test_filters_and_live_from_now(start_server: StartServer) -> None:
    server = await start_server("memory")
    await write(server, "add", "old", "speedups")
    async with Client(transport=transport_to(server)) as session:
        # No `after`: only what happens from now on, and only the feature asked for.
        stream = session.subscribe(changes(feature="beta"))
        reading = asyncio.create_task(take(stream, 2))
        await asyncio.sleep(0.3)  # the subscription starts before the writes below
        await write(server, "add", "a", "speedups")
        await write(server, "add", "b", "beta")
        await write(server, "add", "c", "beta")
        got = await reading
        await stream.aclose()
    assert [(e["revision"], e["resource"]["id"]) for e in got] == [(3, "b"), (4, "c")]


async def test_bad_arguments_are_typed_errors(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with Client(transport=transport_to(server)) as session:
        with pytest.raises(TransportQueryError) as error:
            await take(session.subscribe(changes(type="Not A Slug")), 1)
        assert error.value.errors is not None
        extensions = error.value.errors[0]["extensions"]
        assert (extensions["code"], extensions["field"]) == ("BAD_USER_INPUT", "type")
        # A revision out of range is refused by the Revision scalar, before anything runs.
        with pytest.raises(TransportQueryError) as error:
            await take(session.subscribe(changes(after=-1)), 1)
        assert error.value.errors is not None
        assert "a Revision is a whole number from 0" in error.value.errors[0]["message"]


async def test_trimmed_log_answers_resync_required(start_server: StartServer) -> None:
    server = await start_server("memory")
    for i in range(5):
        await write(server, "add", f"p{i}", "speedups")
    assert await server.service.api.trim_changes(2) == 3
    async with Client(transport=transport_to(server)) as session:
        with pytest.raises(TransportQueryError) as error:
            await take(session.subscribe(changes(after=1)), 1)
        assert error.value.errors is not None
        assert error.value.errors[0]["extensions"] == {
            "code": "RESYNC_REQUIRED",
            "firstRetained": 4,
        }
        # From the retained log on, it works.
        got = await take(session.subscribe(changes(after=3)), 2)
    assert [e["revision"] for e in got] == [4, 5]


# -- the same checks as HTTP ------------------------------------------------------------


async def test_tokens_from_the_header_or_connection_init(start_server: StartServer) -> None:
    tables, secrets = make_tokens(reader="read", writer="write")
    server = await start_server("memory", auth_tokens=tables)
    revision = await write(server, "add", "p1", "speedups", token=secrets["writer"])
    # From connection_init, as a browser does.
    init = {"Authorization": f"Bearer {secrets['reader']}"}
    async with Client(transport=transport_to(server, init_payload=init)) as session:
        got = await take(session.subscribe(changes(after=0)), 1)
    assert got[0]["revision"] == revision
    assert got[0]["actor"] == "writer"
    # From the upgrade request's header.
    async with Client(transport=transport_to(server, headers=bearer(secrets["reader"]))) as session:
        got = await take(session.subscribe(changes(after=0)), 1)
    assert got[0]["revision"] == revision


async def test_no_token_or_a_wrong_one_gets_nothing(start_server: StartServer) -> None:
    tables, secrets = make_tokens(reader="read", writer="write")
    server = await start_server("memory", auth_tokens=tables)
    await write(server, "add", "p1", "speedups", token=secrets["writer"])
    # A wrong token in the header: refused before the upgrade.
    async with server.session.get(
        f"{server.url}/graphql",
        headers={
            **bearer("fgql_not-a-token"),
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "graphql-transport-ws",
        },
    ) as response:
        assert response.status == 401
        assert (await response.json())["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # No token, or a wrong one in connection_init: closed with 4403 before anything runs.
    for init in (None, {"Authorization": "Bearer fgql_not-a-token"}):
        closed = await raw_connection(server, init)
        assert closed[0] == 4403, closed
    # A token without the read scope: the subscription is FORBIDDEN, no event is sent.
    init = {"Authorization": f"Bearer {secrets['writer']}"}
    async with Client(transport=transport_to(server, init_payload=init)) as session:
        with pytest.raises(TransportQueryError) as error:
            await take(session.subscribe(changes(after=0)), 1)
    assert error.value.errors is not None
    assert error.value.errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_pages_of_other_origins_cannot_connect(start_server: StartServer) -> None:
    server = await start_server("memory")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await server.session.ws_connect(
            ws_url(server),
            protocols=["graphql-transport-ws"],
            headers={"Origin": "http://evil.example"},
        )
    assert refused.value.status == 403
    # A page of the service's own origin may.
    own = {"Origin": server.url}
    async with server.session.ws_connect(
        ws_url(server), protocols=["graphql-transport-ws"], headers=own
    ) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"


async def raw_connection(server: Server, init: dict[str, Any] | None) -> tuple[int, str]:
    """Connect with aiohttp's client and send connection_init; the close code and reason."""
    async with server.session.ws_connect(ws_url(server), protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init", "payload": init or {}})
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)


async def test_only_subscriptions_go_over_websocket(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with Client(transport=transport_to(server)) as session:
        mutation = gql(
            'mutation { addFeature(resource: {type: "pipeline", id: "p1"}, feature: "f") '
            "{ __typename } }"
        )
        with pytest.raises(TransportQueryError) as error:
            await session.execute(mutation)
    assert error.value.errors is not None
    assert error.value.errors[0]["extensions"]["code"] == "BAD_REQUEST"
    assert await server.service.api.revision() == 0  # nothing was written


@pytest.mark.parametrize(
    ("method", "accept"),
    [
        ("POST", "application/json"),
        ("POST", "multipart/mixed;subscriptionSpec=1.0, application/json"),
        ("POST", "text/event-stream"),
        ("GET", "application/json"),
    ],
)
async def test_a_subscription_over_http_is_refused_as_a_bad_request(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, method: str, accept: str
) -> None:
    server = await start_server("memory")
    query = "subscription { featureChanges { revision } }"
    with caplog.at_level(logging.ERROR):
        async with server.session.request(
            method,
            f"{server.url}/graphql",
            headers={"Accept": accept},
            **({"json": {"query": query}} if method == "POST" else {"params": {"query": query}}),
        ) as response:
            assert response.status == 400
            body = await response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert "WebSocket" in body["errors"][0]["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_gate_bounds_subscriptions(start_server: StartServer) -> None:
    from features_gql.graphql.admission import Limits

    server = await start_server("memory", limits=Limits(max_depth=2))
    async with Client(transport=transport_to(server)) as session:
        with pytest.raises(TransportQueryError) as error:
            await take(session.subscribe(changes(after=0)), 1)
    assert error.value.errors is not None
    assert error.value.errors[0]["extensions"]["code"] == "QUERY_TOO_DEEP"


async def test_subscriptions_are_counted_and_logged(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server("memory")
    await write(server, "add", "p1", "speedups")
    with caplog.at_level(logging.DEBUG, logger="features_gql.request"):
        async with Client(transport=transport_to(server)) as session:
            stream = session.subscribe(changes(after=0))
            await take(stream, 1)
            await stream.aclose()
            with pytest.raises(TransportQueryError):
                await take(session.subscribe(changes(type="Not A Slug")), 1)
        await asyncio.sleep(0.1)
    lines = [r for r in caplog.records if r.getMessage() == "graphql subscription"]
    outcomes = sorted(r.fields["outcome"] for r in lines)  # type: ignore[attr-defined]
    assert outcomes == ["disconnected", "error"] or outcomes == ["error", "ok"], outcomes
    assert all(r.fields["operation"] == "Follow" for r in lines)  # type: ignore[attr-defined]
    async with server.session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    assert 'features_gql_graphql_request_seconds_count{operation="Follow"' in text
    assert 'features_gql_graphql_errors_total{code="BAD_USER_INPUT"} 1.0' in text
    assert "features_gql_subscription_events_total 1.0" in text


# -- slow subscribers ---------------------------------------------------------------------


def graphql_view(server: Server) -> FeaturesGraphQLView:
    view = server.app[HOT_KEY].graphql[1]
    assert isinstance(view, FeaturesGraphQLView)
    return view


async def subscribe_raw(
    ws: aiohttp.ClientWebSocketResponse, query: str, variables: dict[str, Any] | None = None
) -> None:
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
    payload = {"query": query, "variables": variables or {}}
    await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})


async def bulk_add(server: Server, count: int, feature: str = "f") -> None:
    for start in range(0, count, 1000):
        items = [(Resource("pipeline", f"p{i}"), feature) for i in range(start, start + 1000)]
        await server.service.api.add_many(items[: count - start])


async def test_a_stalled_subscriber_is_closed_with_its_resume_revision(
    start_server: StartServer,
) -> None:
    """A subscriber whose socket stops draining is closed with 4410 and the last revision
    written to it: it reads everything up to that revision, then the close, and resuming
    from that revision misses nothing."""
    server = await start_server("memory")
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    graphql_view(server).send_timeout = 0.5
    total = 6000
    async with server.session.ws_connect(ws_url(server), protocols=["graphql-transport-ws"]) as ws:
        await subscribe_raw(ws, "subscription { featureChanges { revision feature } }")
        await asyncio.sleep(0.2)
        transport = ws._response.connection.transport  # type: ignore[union-attr]
        assert transport is not None
        # A client that stops reading, with a small receive buffer: the service's writes
        # soon back up into its own socket.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        transport.pause_reading()
        await bulk_add(server, total)
        await asyncio.sleep(2.0)
        assert feed.dropped == 1
        transport.resume_reading()
        received: list[int] = []
        while True:
            message = await ws.receive(timeout=5)
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            received.append(message.json()["payload"]["data"]["featureChanges"]["revision"])
        assert message.type == aiohttp.WSMsgType.CLOSE
        code, reason = int(message.data), str(message.extra)
    assert code == 4410
    assert received, "the socket's buffers held some changes"
    last = received[-1]
    assert last < total, "the service stopped sending when the socket stopped draining"
    assert reason == f"subscriber too slow; resume with after={last}"
    assert received == list(range(1, last + 1))
    async with Client(transport=transport_to(server)) as session:
        rest = await take(session.subscribe(changes(after=last)), total - last)
    assert [e["revision"] for e in rest] == list(range(last + 1, total + 1))


async def test_a_client_that_stops_answering_pings_is_closed_with_its_resume_revision(
    start_server: StartServer,
) -> None:
    """The protocol's own ping finds a client that is gone or does not read (one waiting
    for its turn to catch up fills no buffer, so no send times out): it is closed with
    4410 and the revision to resume after, not dropped without a word."""
    server = await start_server("memory")
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    view = graphql_view(server)
    view.keepalive_interval = view.keepalive_timeout = 0.3
    async with server.session.ws_connect(ws_url(server), protocols=["graphql-transport-ws"]) as ws:
        await subscribe_raw(ws, "subscription { featureChanges { revision } }")
        await asyncio.sleep(0.1)
        await bulk_add(server, 3)
        received: list[int] = []
        pings = 0
        async with asyncio.timeout(10):
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = message.json()
                if data["type"] == "ping":
                    pings += 1  # and never a pong
                else:
                    received.append(data["payload"]["data"]["featureChanges"]["revision"])
        assert message.type == aiohttp.WSMsgType.CLOSE
        code, reason = int(message.data), str(message.extra)
    assert (code, reason) == (4410, "subscriber too slow; resume with after=3")
    assert received == [1, 2, 3]
    assert pings == 1
    assert feed.dropped == 1


async def test_a_client_that_answers_pings_keeps_its_subscription(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    view = graphql_view(server)
    view.keepalive_interval = view.keepalive_timeout = 0.2
    async with Client(transport=transport_to(server)) as session:
        stream = session.subscribe(changes())
        reading = asyncio.ensure_future(take(stream, 1))
        await asyncio.sleep(1.5)  # several pings, each answered
        revision = await write(server, "add", "p1", "f")
        assert [e["revision"] for e in await reading] == [revision]
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    assert feed.dropped == 0


async def test_one_encoding_per_change_for_subscribers_of_one_shape(
    start_server: StartServer,
) -> None:
    """Ten subscribers of the same document (each from its own revision) share one
    encoding of each change; one selecting other fields gets its own, and the right one."""
    server = await start_server("memory")
    encoded = graphql_view(server).encoded_events
    await write(server, "add", "p0", "speedups")
    query = "subscription S($after: Revision) { featureChanges(after: $after) { revision } }"
    other = "subscription { featureChanges(after: 0) { revision feature } }"
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(
                server.session.ws_connect(ws_url(server), protocols=["graphql-transport-ws"])
            )
            for _ in range(11)
        ]
        for i, ws in enumerate(sockets[:10]):
            await subscribe_raw(ws, query, {"after": i % 2})
        await subscribe_raw(sockets[10], other)
        await asyncio.sleep(0.2)
        for i in range(1, 4):
            await write(server, "add", f"p{i}", "speedups")
        for i, ws in enumerate(sockets):
            got = []
            while len(got) < (4 if i % 2 == 0 or i == 10 else 3):
                got.append((await ws.receive_json(timeout=5))["payload"]["data"]["featureChanges"])
            if i < 10:
                assert got == [{"revision": r} for r in range(1 + i % 2, 5)]
            else:
                assert got == [{"revision": r, "feature": "speedups"} for r in range(1, 5)]
    assert len(encoded) == 8  # four changes, two shapes
    assert encoded.misses == 8


async def test_the_feed_holds_a_bounded_window_whatever_was_delivered(
    start_server: StartServer,
) -> None:
    """The feed's memory is its window: after many changes to a subscriber, it holds at
    most ``retain`` of them, and nothing once the subscriber has left."""
    server = await start_server("memory")
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    feed.retain = 100
    async with Client(transport=transport_to(server)) as session:
        stream = session.subscribe(changes(after=0))
        reader = asyncio.create_task(take(stream, 3000))
        await asyncio.sleep(0.2)
        await bulk_add(server, 3000)
        got = await reader
        assert [e["revision"] for e in got] == list(range(1, 3001))
        assert feed.retained <= 100
    for _ in range(50):
        if feed.subscribers == 0 and feed.retained == 0:
            break
        await asyncio.sleep(0.1)
    assert (feed.subscribers, feed.retained) == (0, 0)


async def test_a_subscriber_behind_the_window_catches_up_from_the_log(
    start_server: StartServer,
) -> None:
    """A slow in-process reader that falls behind the window reads the change log until it
    is back in it: it misses nothing and is not dropped."""
    server = await start_server("memory")
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    feed.retain = 50
    received: list[int] = []
    reading = asyncio.Event()

    async def slow() -> None:
        async for change in feed.subscribe(0):
            received.append(change.revision)
            reading.set()
            if len(received) % 100 == 0:
                await asyncio.sleep(0.05)
            if len(received) == 2000:
                return

    task = asyncio.create_task(slow())
    await write(server, "add", "first", "f")
    await reading.wait()
    await bulk_add(server, 1999)
    async with asyncio.timeout(20):
        await task
    assert received == list(range(1, 2001))
    assert feed.dropped == 0


async def test_after_past_the_store_is_refused(start_server: StartServer) -> None:
    server = await start_server("memory")
    await write(server, "add", "p0", "f")
    async with Client(transport=transport_to(server)) as session:
        with pytest.raises(TransportQueryError) as caught:
            await take(session.subscribe(changes(after=5)), 1)
    assert "after must be at most the store's revision 1" in str(caught.value)


# -- across processes and instances ------------------------------------------------------


async def test_workers_deliver_changes_made_by_any_process(
    serving: Any,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Subscribers spread over two worker processes each receive every change, whichever
    process (a worker, or another program on the same SQLite file) made it."""
    db = tmp_path / "shared.db"
    server = serving("--workers", "2", "--store", f"sqlite://{db}", env=clean_env())
    url = f"ws://127.0.0.1:{server.port}/graphql"
    streams = []
    clients = [Client(transport=WebsocketsTransport(url=url)) for _ in range(6)]
    try:
        for client in clients:
            session = await client.connect_async()
            stream = session.subscribe(changes(after=0))
            streams.append(asyncio.create_task(take(stream, 4)))
        await asyncio.sleep(0.5)
        for i in range(2):
            # Through the workers, whichever one takes the connection...
            post(server.port, ADD, {"f": f"w{i}"})
        # ...and from another process writing to the same file.
        store = SQLiteStore(str(db))
        await store.open()
        try:
            for i in range(2):
                await store.add(Resource("pipeline", "db8e9a0d"), f"o{i}", actor=None)
        finally:
            await store.close()
        received = await asyncio.gather(*streams)
    finally:
        for client in clients:
            await client.close_async()
    for events in received:
        assert [e["revision"] for e in events] == [1, 2, 3, 4]
        assert [e["feature"] for e in events] == ["w0", "w1", "o0", "o1"]


async def test_instances_on_one_mongodb_share_the_feed(
    start_server: StartServer, mongodb_url: str, mongodb_database: str
) -> None:
    from tests.test_mongodb_store import with_database

    url = with_database(mongodb_url, mongodb_database)
    reading, writing = await start_server(url), await start_server(url)
    async with Client(transport=transport_to(reading)) as session:
        stream = session.subscribe(changes(after=0))
        task = asyncio.create_task(take(stream, 3))
        for i in range(3):
            await write(writing, "add", f"p{i}", "speedups")
        got = await task
    assert [(e["revision"], e["resource"]["id"]) for e in got] == [(1, "p0"), (2, "p1"), (3, "p2")]


async def test_catalog_and_bulk_changes_arrive_live_and_a_type_filter_drops_definitions(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    async with (
        Client(transport=transport_to(server)) as everything,
        Client(transport=transport_to(server)) as pipelines,
    ):
        all_changes = everything.subscribe(changes(after=0))
        of_pipelines = pipelines.subscribe(changes(after=0, type="pipeline"))
        # A definition names no resource: it arrives with resource null, and only unfiltered.
        define = 'mutation { defineFeature(input: {name: "beta"}) { __typename } }'
        assert not (await server.gql(define)).errors
        bulk = (
            'mutation { addFeatures(items: [{resource: {type: "pipeline", id: "a"}, feature: '
            '"beta"}, {resource: {type: "pipeline", id: "b"}, feature: "beta"}]) '
            "{ __typename } }"
        )
        assert not (await server.gql(bulk)).errors
        got = await take(all_changes, 3)
        assert [(e["op"], e["resource"]) for e in got] == [
            ("DEFINE", None),
            ("ADD", {"type": "pipeline", "id": "a"}),
            ("ADD", {"type": "pipeline", "id": "b"}),
        ]
        filtered = await take(of_pipelines, 2)
        assert [e["revision"] for e in filtered] == [2, 3]
        await all_changes.aclose()
        await of_pipelines.aclose()


async def test_catching_up_from_the_log_shares_one_budget(start_server: StartServer) -> None:
    """Subscribers reading the change log share a budget of changes: after its burst, a
    second subscriber from far back waits for it; live changes do not count."""
    server = await start_server("memory")
    feed = server.service.feed
    assert isinstance(feed, ChangeFeed)
    feed.catch_up = CatchUpBudget(rate=1.0, burst=300)
    await bulk_add(server, 1000)
    first: list[int] = []

    async def read(into: list[int], after: int, count: int) -> None:
        async for change in feed.subscribe(after):
            into.append(change.revision)
            if len(into) == count:
                return

    # The burst: the first pages, at once.
    await asyncio.wait_for(read(first, 0, 300), 5)
    # Then one change a second, shared: another subscriber from far back waits.
    second: list[int] = []
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read(second, 0, 300), 0.5)
    assert len(second) < 300
    # A subscriber from now on reads no backlog: live changes arrive at once.
    live: list[int] = []
    reader = asyncio.create_task(read(live, 1000, 1))
    await asyncio.sleep(0.1)
    await write(server, "add", "live", "f")
    await asyncio.wait_for(reader, 5)
    assert live == [1001]


HOSTILE_FRAMES = [
    ("[]", "a message must be a JSON object"),
    ("1", "a message must be a JSON object"),
    ("null", "a message must be a JSON object"),
    ('"connection_init"', "a message must be a JSON object"),
    ('{"type": 5}', "unknown message type"),
    ('{"type": "' + "x" * 300 + '"}', "unknown message type"),
    ('{"type": "connection_init", "payload": []}', "connection_init: payload must be an object"),
    ('{"type": "subscribe", "id": 1, "payload": {"query": "{ revision }"}}', "subscribe: id"),
    ('{"type": "subscribe", "id": "' + "i" * 129 + '", "payload": {}}', "subscribe: id"),
    ('{"type": "subscribe", "id": "1", "payload": []}', "subscribe: payload must be"),
    ('{"type": "subscribe", "id": "1", "payload": {"query": 1}}', "subscribe: payload must be"),
    (
        '{"type": "subscribe", "id": "1", "payload": {"query": "", "variables": []}}',
        "subscribe: payload.variables has the wrong type",
    ),
    ('{"type": "complete", "id": null}', "complete: id"),
    ('{"type": "ping", "payload": 1}', "ping: payload must be an object"),
    ('{"a": NaN}', "WebSocket message must be valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "WebSocket message must be valid JSON"),
]


@pytest.mark.parametrize(("frame", "reason"), HOSTILE_FRAMES, ids=range(len(HOSTILE_FRAMES)))
async def test_a_wrong_frame_closes_the_connection_with_4400_and_no_traceback(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, frame: str, reason: str
) -> None:
    server = await start_server("memory")
    with caplog.at_level(logging.INFO):
        async with server.session.ws_connect(
            ws_url(server), protocols=["graphql-transport-ws"]
        ) as ws:
            if "subscribe" in frame or "complete" in frame:
                await ws.send_json({"type": "connection_init", "payload": {}})
                assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
            await ws.send_str(frame)
            message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 4400
    assert str(message.extra).startswith(reason)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # The service goes on serving.
    async with server.session.get(server.url + "/healthz") as response:
        assert response.status == 200
