"""Every way in goes through the one request pipeline (features_gql/http/pipeline.py):
authenticated once, limited per client, counted and logged. The routes are enumerated
from the application itself, so a route added without the pipeline fails here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from features_gql.http.pipeline import PIPELINE_KEY, PUBLIC_KEY
from features_gql.rate_limits import Rate
from tests.conftest import Server, StartServer, bearer, make_tokens

CONTEXT = {"context": {"targetingKey": "1", "resourceType": "t"}}
#: A concrete path for each route's variables.
SAMPLES = {"key": "speedups", "name": "index.html", "digest": "0"}
#: The requests that reach each non-public route's entrance (method, body).
ENTRANCES: dict[str, tuple[str, Any]] = {
    "/graphql": ("POST", {"query": '{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }'}),
    "/ofrep/v1/evaluate/flags/{key}": ("POST", CONTEXT),
    "/ofrep/v1/evaluate/flags": ("POST", CONTEXT),
    "/admin/faults": ("GET", None),
    "/metrics": ("GET", None),
}


def _concrete(canonical: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLES.get(m.group(1), "x"), canonical)


@asynccontextmanager
async def client_at(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (any of 127/8 reaches the
    server): a client of its own, as far as per-client limits and logs go."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        yield session


async def secured_server(
    start_server: StartServer, **settings: Any
) -> tuple[Server, dict[str, str]]:
    tables, secrets = make_tokens(reader="read", writer="read,write", operator="admin")
    server = await start_server(
        "memory", auth_tokens=tables, anonymous="none", metrics_access="read", **settings
    )
    return server, secrets


def _routes(server: Server) -> list[tuple[str, str]]:
    """Every (method, path pattern) the application routes, HEAD aside (aiohttp adds one
    beside each GET)."""
    found = set()
    for route in server.app.router.routes():
        resource = route.resource
        assert resource is not None
        if route.method != "HEAD":
            found.add((route.method, resource.canonical))
    return sorted(found)


async def _metrics(server: Server, token: str) -> str:
    async with server.session.get(f"{server.url}/metrics", headers=bearer(token)) as response:
        assert response.status == 200
        return await response.text()


async def test_every_route_is_public_or_entered_through_the_pipeline(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server, secrets = await secured_server(start_server)
    public = server.app[PUBLIC_KEY]
    routes = _routes(server)
    entered = {path for method, path in routes if method != "*" and path not in public}
    # Every route that serves data is one the pipeline guards here; a new one must be
    # added to ENTRANCES (and so to this test) or declared public.
    assert entered == set(ENTRANCES), entered ^ set(ENTRANCES)
    assert {"/healthz", "/readyz", "/ui/", "/ui/{name}"} <= public
    assert not public & set(ENTRANCES)
    caplog.set_level(logging.INFO, logger="features_gql.request")
    for n, path in enumerate(sorted(entered), start=2):
        method, body = ENTRANCES[path]
        url = f"{server.url}{_concrete(path)}"
        # A client of its own per route: its refusal is its first, so it is logged now.
        async with client_at(f"127.0.0.{n}") as client:
            async with client.request(method, url, json=body) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer ")
                rid = response.headers["X-Request-ID"]
            logged = [
                r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == rid
            ]
            assert logged, f"the refusal of {path} was not logged"
            headers = bearer(secrets["reader"])
            async with client.request(method, url, json=body, headers=headers) as response:
                expected = 403 if path == "/admin/faults" else 200
                text = await response.text()
                assert response.status == expected, (path, text)
                if path == "/graphql":
                    assert json.loads(text) == {"data": {"hasFeature": False}}
    text = await _metrics(server, secrets["reader"])
    assert 'features_gql_graphql_errors_total{code="UNAUTHENTICATED"}' in text
    assert (
        'features_gql_ofrep_request_seconds_count{endpoint="evaluate",outcome="rejected"} 1.0'
        in text
    )
    assert (
        'features_gql_ofrep_request_seconds_count{endpoint="bulk",outcome="rejected"} 1.0' in text
    )
    assert 'features_gql_http_requests_total{route="/admin/faults",status="401"} 1.0' in text
    assert 'features_gql_http_requests_total{route="/metrics",status="401"} 1.0' in text
    # The catch-all routes answer 405 to anyone, with no data.
    for method, path in routes:
        if method == "*":
            async with server.session.request("PUT", f"{server.url}{_concrete(path)}") as response:
                assert response.status == 405, path


async def test_the_health_probes_and_files_need_no_token_and_are_counted(
    start_server: StartServer,
) -> None:
    server, secrets = await secured_server(start_server)
    for path in ("/healthz", "/readyz", "/ui/"):
        async with server.session.get(f"{server.url}{path}") as response:
            assert response.status == 200, path
    text = await _metrics(server, secrets["reader"])
    assert 'features_gql_http_requests_total{route="/healthz",status="200"} 1.0' in text
    assert 'features_gql_http_requests_total{route="/ui/",status="200"} 1.0' in text


@pytest.mark.parametrize("path", sorted(ENTRANCES))
async def test_each_request_is_authenticated_once(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    server, secrets = await secured_server(start_server)
    policy = server.app[PIPELINE_KEY].auth
    calls: list[str | None] = []
    original = type(policy).authenticate

    def counting(self: Any, authorization: str | None) -> Any:
        calls.append(authorization)
        return original(self, authorization)

    method, body = ENTRANCES[path]
    token = secrets["operator" if path == "/admin/faults" else "reader"]
    monkeypatch.setattr(type(policy), "authenticate", counting)
    async with server.session.request(
        method, f"{server.url}{_concrete(path)}", json=body, headers=bearer(token)
    ) as response:
        assert response.status == 200, await response.text()
    assert calls == [f"Bearer {token}"]


# -- rate limits ---------------------------------------------------------------------------


async def test_an_address_over_its_rate_gets_429_with_retry_after(
    start_server: StartServer,
) -> None:
    server = await start_server(address_rate=Rate(1, 5))
    query = {"query": '{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }'}
    async with client_at("127.0.0.2") as greedy, client_at("127.0.0.3") as other:
        statuses = []
        for _ in range(6):
            async with greedy.post(f"{server.url}/graphql", json=query) as response:
                statuses.append(response.status)
                if response.status == 429:
                    retry = int(response.headers["Retry-After"])
                    body = await response.json()
        assert statuses == [200] * 5 + [429]
        assert retry == 1
        error = body["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "address"
        # Every entrance shares the bucket: OFREP and the files are refused too...
        async with greedy.post(f"{server.url}/ofrep/v1/evaluate/flags/f", json=CONTEXT) as response:
            assert response.status == 429
        async with greedy.get(f"{server.url}/ui/") as response:
            assert response.status == 429
        # ...the health probes never are, and another address is served.
        async with greedy.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        async with other.post(f"{server.url}/graphql", json=query) as response:
            assert response.status == 200
        await asyncio.sleep(1.1)
        async with greedy.post(f"{server.url}/graphql", json=query) as response:
            assert response.status == 200
    text = (await (await server.session.get(f"{server.url}/metrics")).read()).decode()
    assert 'features_gql_rate_limited_total{limit="address"} 3.0' in text


async def test_a_token_over_its_rate_is_refused_and_another_token_is_not(
    start_server: StartServer,
) -> None:
    server, secrets = await secured_server(start_server, token_rate=Rate(0.5, 3))
    query = {"query": '{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }'}
    statuses = []
    for _ in range(4):
        async with server.session.post(
            f"{server.url}/graphql", json=query, headers=bearer(secrets["reader"])
        ) as response:
            statuses.append(response.status)
            retry = response.headers.get("Retry-After")
    assert statuses == [200, 200, 200, 429]
    assert retry == "2"
    async with server.session.post(
        f"{server.url}/graphql", json=query, headers=bearer(secrets["writer"])
    ) as response:
        assert response.status == 200


async def test_new_query_texts_are_limited_per_client_and_repeated_ones_are_not(
    start_server: StartServer,
) -> None:
    # A thousandth of a second of parsing, then a thousandth a second: one new text.
    server = await start_server(parse_rate=Rate(0.001, 0.001))
    fields = " ".join(
        f'a{i}: hasFeature(resource: {{type: "t", id: "{i}"}}, feature: "f")' for i in range(40)
    )
    repeated = {"query": f"{{ {fields} }}"}
    async with client_at("127.0.0.4") as client, client_at("127.0.0.5") as other:
        async with client.post(f"{server.url}/graphql", json=repeated) as response:
            assert response.status == 200
        async with client.post(
            f"{server.url}/graphql", json={"query": f"query Q {{ {fields} }}"}
        ) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            body = await response.json()
        assert body["errors"][0]["extensions"]["limit"] == "parse"
        assert body["errors"][0]["message"].startswith(
            "Too many new query texts from this client; send queries it has sent before, "
            "or retry in "
        )
        # A text already parsed costs nothing to parse again...
        for _ in range(5):
            async with client.post(f"{server.url}/graphql", json=repeated) as response:
                assert response.status == 200
        # ...and another client has its own budget.
        async with other.post(
            f"{server.url}/graphql", json={"query": f"query Q {{ {fields} }}"}
        ) as response:
            assert response.status == 200


async def test_distinct_maximum_size_queries_from_one_client_leave_the_loop_to_others(
    start_server: StartServer,
) -> None:
    """The default configuration: one client sends distinct texts at the token limit as
    fast as it can; probes and another client's flag checks are answered within a second
    throughout, and once the client has used its burst of parsing it is refused."""
    server = await start_server()
    check = {"query": '{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }'}
    statuses: list[int] = []
    slowest = 0.0

    async def attack(client: aiohttp.ClientSession, worker: int) -> None:
        for n in range(25):
            fields = " ".join(
                f'a{i}: resource(type: "t", id: "{worker}-{n}-{i}") {{ type id }}'
                for i in range(98)
            )
            async with client.post(f"{server.url}/graphql", json={"query": f"{{ {fields} }}"}) as r:
                statuses.append(r.status)

    async def probe(client: aiohttp.ClientSession) -> None:
        nonlocal slowest
        loop = asyncio.get_running_loop()
        while len(statuses) < 100:
            started = loop.time()
            async with client.get(f"{server.url}/healthz") as r:
                assert r.status == 200
            async with client.post(f"{server.url}/graphql", json=check) as r:
                assert r.status == 200
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0.05)

    async with client_at("127.0.0.6") as attacker, client_at("127.0.0.7") as normal:
        await asyncio.gather(*(attack(attacker, w) for w in range(4)), probe(normal))
    assert slowest < 1.0
    assert statuses.count(429) > 0, statuses
    text = (await (await server.session.get(f"{server.url}/metrics")).read()).decode()
    assert f'features_gql_rate_limited_total{{limit="parse"}} {statuses.count(429)}.0' in text
    assert set(statuses) <= {200, 429}


async def test_a_subscription_over_the_rate_gets_a_typed_error(start_server: StartServer) -> None:
    server = await start_server(address_rate=Rate(0.1, 3))
    ws_url = server.url.replace("http", "ws") + "/graphql"
    async with server.session.ws_connect(ws_url, protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init"})
        assert (await ws.receive_json())["type"] == "connection_ack"
        answers: list[dict[str, Any]] = []
        for n in range(3):
            await ws.send_json(
                {
                    "id": str(n),
                    "type": "subscribe",
                    "payload": {"query": "subscription { featureChanges { revision } }"},
                }
            )
        while len(answers) < 1:
            message = json.loads((await ws.receive()).data)
            if message["type"] == "error":
                answers.append(message)
        error = answers[0]["payload"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "address"
        assert error["extensions"]["retryAfter"] >= 1
        assert error["message"].startswith("Too many requests from this address; retry in ")


async def test_a_request_is_cut_off_at_its_deadline(start_server: StartServer) -> None:
    """Each store call has its own deadline; the request's deadline bounds one that makes
    many, one after the other (a mutation's fields run in turn)."""
    slow = {"plugin": "slow", "delay_ms": 300, "inner": {"plugin": "memory"}}
    server = await start_server(slow)
    server.app[PIPELINE_KEY].request_deadline = 0.5
    fields = " ".join(
        f'a{n}: addFeature(resource: {{type: "t", id: "{n}"}}, feature: "f") {{ __typename }}'
        for n in range(4)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await server.gql(f"mutation {{ {fields} }}")
    assert loop.time() - started < 1.0
    assert response.status == 503
    assert response.body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    async with server.session.get(f"{server.url}/healthz") as health:
        assert health.status == 200


async def test_a_token_over_its_rate_on_a_websocket_gets_a_typed_error_per_subscribe(
    start_server: StartServer,
) -> None:
    """The token's bucket, not the address's: another token on the same address is
    served, and the connection of the limited one stays open."""
    server, secrets = await secured_server(start_server, token_rate=Rate(0.1, 2))
    ws_url = server.url.replace("http", "ws") + "/graphql"
    subscribe = {
        "type": "subscribe",
        "payload": {"query": "subscription { featureChanges { revision } }"},
    }

    async def first_answer(token: str, count: int) -> list[dict[str, Any]]:
        async with server.session.ws_connect(ws_url, protocols=["graphql-transport-ws"]) as ws:
            await ws.send_json(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            )
            assert (await ws.receive_json())["type"] == "connection_ack"
            for n in range(count):
                await ws.send_json({**subscribe, "id": str(n)})
            errors: list[dict[str, Any]] = []
            async with asyncio.timeout(5):
                while not errors:
                    message = json.loads((await ws.receive()).data)
                    if message["type"] == "error":
                        errors.append(message)
            assert not ws.closed
            return errors

    # connection_init takes one from the reader's bucket of two, the first subscribe the
    # second: the second subscribe is refused.
    errors = await first_answer(secrets["reader"], 2)
    assert errors[0]["id"] == "1"
    error = errors[0]["payload"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["limit"] == "token"
    # The writer's bucket is its own.
    async with server.session.ws_connect(ws_url, protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {secrets['writer']}"}}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json({**subscribe, "id": "w"})
        message: dict[str, Any] | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                message = json.loads((await ws.receive()).data)
        assert message is None or message["type"] != "error", message


# -- every refusal in the same words -------------------------------------------------------

REALMS = {
    "/graphql": "features-gql",
    "/ofrep/v1/evaluate/flags/{key}": "features-gql ofrep",
    "/ofrep/v1/evaluate/flags": "features-gql ofrep",
    "/admin/faults": "features-gql admin",
    "/metrics": "features-gql metrics",
}


@pytest.mark.parametrize("path", sorted(ENTRANCES))
async def test_refusals_are_answered_alike_at_every_entrance(
    start_server: StartServer, path: str
) -> None:
    server, secrets = await secured_server(start_server, token_rate=Rate(0.5, 1))
    method, body = ENTRANCES[path]
    url = f"{server.url}{_concrete(path)}"

    async def ask(headers: dict[str, str]) -> tuple[int, Any, Any]:
        async with server.session.request(method, url, json=body, headers=headers) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, response.headers, json.loads(text) if is_json else text

    status, headers, answer = await ask({})
    assert status == 401
    assert headers["WWW-Authenticate"] == f'Bearer realm="{REALMS[path]}"'
    error = answer["errors"][0]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    scope = "admin" if path == "/admin/faults" else "read"
    assert (
        error["message"] == f"This needs the '{scope}' scope: send Authorization: Bearer <token>."
    )
    status, headers, answer = await ask(bearer("not-a-token"))
    assert status == 401
    assert answer["errors"][0]["message"] == "The bearer token is not known to this service."
    if path == "/admin/faults":
        status, _, answer = await ask(bearer(secrets["reader"]))
        assert status == 403
        assert answer["errors"][0] == {
            "message": "The token 'reader' lacks the 'admin' scope.",
            "extensions": {"code": "FORBIDDEN"},
        }
    token = secrets["operator" if path == "/admin/faults" else "reader"]
    status, _, _ = await ask(bearer(token))
    assert status == 200
    status, headers, answer = await ask(bearer(token))
    assert status == 429
    assert headers["Retry-After"] == "2"
    error = answer["errors"][0]
    assert error["message"] == "Too many requests from this token; retry in 2 s."
    waits = error["extensions"].pop("retryAfterSeconds")
    assert error["extensions"] == {"code": "RATE_LIMITED", "limit": "token"}
    assert 1.9 < waits <= 2.0  # the bucket refills at 0.5 a second from empty


async def test_an_application_that_mounts_the_api_without_the_observer_is_limited_too(
    tmp_path: Any,
) -> None:
    """Without request_context, the pipeline makes the scope itself and takes the
    address from the socket."""
    from aiohttp import web

    from features_gql import FeaturesAPI
    from features_gql.http import mount_graphql
    from features_gql.http.pipeline import Pipeline
    from features_gql.rate_limits import RateLimits
    from features_gql_plugins.memory_store import MemoryStore

    app = web.Application()
    limits = RateLimits(per_address=Rate(0.5, 2))
    mount_graphql(app, FeaturesAPI(MemoryStore()), pipeline=Pipeline(rate_limits=limits))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    query = {"query": '{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }'}
    try:
        statuses = []
        async with client_at("127.0.0.8") as session:
            for _ in range(3):
                async with session.post(f"http://127.0.0.1:{port}/graphql", json=query) as r:
                    statuses.append(r.status)
                    last = await r.json()
        assert statuses == [200, 200, 429]
        assert last["errors"][0]["message"] == "Too many requests from this address; retry in 2 s."
        # Another address has a bucket of its own: the socket's address is the key.
        async with (
            client_at("127.0.0.9") as other,
            other.post(f"http://127.0.0.1:{port}/graphql", json=query) as r,
        ):
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_limits_switched_off_never_refuse(start_server: StartServer) -> None:
    off = Rate(0, 0)
    server, secrets = await secured_server(
        start_server, token_rate=off, address_rate=off, parse_rate=off
    )
    statuses = set()
    for n in range(30):
        fresh = {
            "query": f'query Q{n} {{ hasFeature(resource: {{type: "t", id: "1"}}, feature: "f") }}'
        }
        async with server.session.post(
            f"{server.url}/graphql", json=fresh, headers=bearer(secrets["reader"])
        ) as response:
            statuses.add(response.status)
    assert statuses == {200}


async def test_tokenless_subscriptions_are_not_charged_to_a_token_bucket(
    start_server: StartServer,
) -> None:
    """Anonymous callers share no token bucket: only their address's counts."""
    server = await start_server(token_rate=Rate(0.1, 1), address_rate=Rate(100, 100))
    ws_url = server.url.replace("http", "ws") + "/graphql"
    subscribe = {
        "type": "subscribe",
        "payload": {"query": "subscription { featureChanges { revision } }"},
    }
    async with server.session.ws_connect(ws_url, protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init"})
        assert (await ws.receive_json())["type"] == "connection_ack"
        for n in range(3):
            await ws.send_json({**subscribe, "id": str(n)})
        message: dict[str, Any] | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                message = json.loads((await ws.receive()).data)
        assert message is None or message["type"] != "error", message
