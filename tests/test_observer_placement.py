"""Where the service observes its requests (request ids, metrics, the request log).

``create_app`` gives the application an observer middleware, so that any runner serves
it observed. The service's own runner takes the observer out of the middlewares and runs
it around the whole application instead, which spares aiohttp's middleware chain on
every request; with CORS configured the observer stays where it was, inside CORS. Either
way every answer must be observed, routing failures included.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.web_request import BaseRequest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.http.app import OBSERVER_KEY, create_app, request_context, server_handler
from features_gql.http.connections import ConnectionLimits, GuardedAppRunner
from features_gql.http.responses import SERVER
from tests.conftest import StartServer

APP = "https://app.example"
CONTEXT = {"targetingKey": "p1", "resourceType": "pipeline"}
CHECK = {
    "query": 'query Probe($r: ResourceInput!) { hasFeature(resource: $r, feature: "speedups") }',
    "variables": {"r": {"type": "pipeline", "id": "p1"}},
}


def _count(exposition: str, operation: str, outcome: str) -> float:
    pattern = (
        r"features_gql_graphql_request_seconds_count\{"
        rf'operation="{operation}",outcome="{outcome}"\}} (\S+)'
    )
    found = re.search(pattern, exposition)
    return float(found.group(1)) if found else 0.0


async def _answers(session: aiohttp.ClientSession, url: str) -> dict[str, aiohttp.ClientResponse]:
    return {
        "fast path": await session.post(f"{url}/graphql", json=CHECK),
        "general path": await session.post(f"{url}/graphql", json={"query": "{ __typename }"}),
        "bad body": await session.post(
            f"{url}/graphql", data=b"{", headers={"Content-Type": "application/json"}
        ),
        "not found": await session.get(f"{url}/nowhere"),
        "method": await session.delete(f"{url}/healthz"),
        "health": await session.get(f"{url}/healthz"),
        "panel": await session.get(f"{url}/ui/"),
        "ofrep": await session.post(
            f"{url}/ofrep/v1/evaluate/flags/speedups",
            json={"context": {"targetingKey": "p1", "resourceType": "pipeline"}},
        ),
    }


async def test_the_service_runner_observes_every_answer_outside_the_middleware_chain(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    assert list(server.app.middlewares) == []  # taken out, and run by the server instead
    answers = await _answers(server.session, server.url)
    statuses = {name: answer.status for name, answer in answers.items()}
    assert statuses == {
        "fast path": 200,
        "general path": 200,
        "bad body": 400,
        "not found": 404,
        "method": 405,
        "health": 200,
        "panel": 200,
        "ofrep": 200,
    }
    ids = [answer.headers.get("X-Request-ID") for answer in answers.values()]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert {answer.headers.get("Server") for answer in answers.values()} == {SERVER}
    # A routing failure is answered by the observer's JSON error, not aiohttp's text.
    assert answers["not found"].content_type == "application/json"
    assert (await answers["not found"].json())["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # A request id the client sends is echoed, and the answer counted by the metrics.
    before = _count(await (await server.session.get(f"{server.url}/metrics")).text(), "Probe", "ok")
    echoed = await server.session.post(
        f"{server.url}/graphql", json=CHECK, headers={"X-Request-ID": "client-chosen-1"}
    )
    assert echoed.headers["X-Request-ID"] == "client-chosen-1"
    after = _count(await (await server.session.get(f"{server.url}/metrics")).text(), "Probe", "ok")
    assert after == before + 1
    assert server.service.metrics.requests_in_flight == 0


async def test_with_cors_the_observer_stays_inside_it(start_server: StartServer) -> None:
    server = await start_server("memory", cors_origins=(APP,))
    middlewares = list(server.app.middlewares)
    assert len(middlewares) == 2
    assert middlewares[-1] is server.app[OBSERVER_KEY]
    answers = await _answers(server.session, server.url)
    for name, answer in answers.items():
        assert answer.headers.get("X-Request-ID"), name
    # CORS outside the observer labels the observer's own answers too (a 404 here).
    refused = await server.session.get(f"{server.url}/nowhere", headers={"Origin": APP})
    assert refused.status == 404
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    assert refused.headers.get("X-Request-ID")


async def test_expect_continue_and_response_signals_still_reach_graphql_posts() -> None:
    """A POST to /graphql skips the router only while the router is all it would skip:
    `Expect: 100-continue` is answered before the body is sent, and a response-prepare
    signal (run by the routed path) keeps every request routed."""
    service = build(Settings(store="memory", loggers=()))
    app = create_app(service)
    prepared: list[str] = []

    async def signal(request: web.Request, response: web.StreamResponse) -> None:
        prepared.append(request.path)

    app.on_response_prepare.append(signal)
    runner = GuardedAppRunner(app, ConnectionLimits())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/graphql"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json=CHECK) as answer:
                assert answer.status == 200
                assert answer.headers.get("X-Request-ID")
            async with session.post(url, json=CHECK, expect100=True) as answer:
                assert answer.status == 200
                assert await answer.json() == {"data": {"hasFeature": False}}
        assert prepared == ["/graphql", "/graphql"]
    finally:
        await runner.cleanup()


async def test_expect_continue_on_the_default_application(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with server.session.post(f"{server.url}/graphql", json=CHECK, expect100=True) as answer:
        assert answer.status == 200
        assert answer.headers.get("X-Request-ID")
        assert await answer.json() == {"data": {"hasFeature": False}}


def test_server_handler_leaves_applications_it_cannot_take_the_observer_from_alone() -> None:
    async def plain(request: BaseRequest) -> web.StreamResponse:
        return web.Response()

    foreign = web.Application(middlewares=[request_context])
    assert server_handler(foreign)(plain) is plain
    assert list(foreign.middlewares) == [request_context]

    app = create_app(build(Settings(store="memory", loggers=())))
    app.freeze()
    assert server_handler(app)(plain) is plain
    assert list(app.middlewares) == [app[OBSERVER_KEY]]

    app = create_app(build(Settings(store="memory", loggers=())))
    assert server_handler(app)(plain) is not plain
    assert list(app.middlewares) == []


async def test_an_ofrep_key_taken_from_the_path_is_the_key_the_router_gives(
    start_server: StartServer,
) -> None:
    """OFREP's single evaluations skip the router too, so the server takes the flag's key
    from the path itself: it must be the key the router decodes, for any key sent any way.
    The same keys go to a service with CORS configured, whose requests are all routed."""
    direct = await start_server("memory")
    routed = await start_server("memory", cors_origins=(APP,))
    assert list(direct.app.middlewares) == []
    paths: list[str] = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        st.text(max_size=12),
        st.sampled_from(["", "/", "%2F", "%2f", "%25", "%", "."]),
        st.booleans(),
    )
    def collect(key: str, extra: str, quoted: bool) -> None:
        text = quote(key, safe="/%" if not quoted else "") + extra
        paths.append(text)

    collect()
    paths += ["", "speedups", "a%2Fb", "a/b", "%252F", "%E2%9C%93", "sp%65edups", "x%00y"]
    paths += ["a%2", "%FF", "a//b", "a;b", "%2e%2e/graphql", "%2e%2e%2f%2e%2e%2fgraphql"]
    paths += ["speedups?x=1", "speedups#x"]
    for raw in paths:
        answers = []
        for server in (direct, routed):
            url = URL(f"{server.url}/ofrep/v1/evaluate/flags/{raw}", encoded=True)
            async with server.session.post(url, json={"context": CONTEXT}) as answer:
                body = await answer.read()
                answers.append((answer.status, _without_request_id(body)))
        assert answers[0] == answers[1], raw
        assert answers[0][0] < 500, raw


def _without_request_id(body: bytes) -> object:
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    if isinstance(decoded, dict):
        decoded.get("metadata", {}).pop("requestId", None)
    return decoded
