"""Every answer names the server as ``features-gql``, never as aiohttp and Python with
their versions (which scanners match against vulnerability lists): answers of the
application, of its middlewares, of the WebSocket handshake, and of the connection guard
for requests the application never sees."""

from __future__ import annotations

import asyncio

from features_gql.http.responses import SERVER
from tests.conftest import StartServer
from tests.real_server import serve

APP = "https://app.example"
CHECK = {
    "query": 'query($r: ResourceInput!) { hasFeature(resource: $r, feature: "speedups") }',
    "variables": {"r": {"type": "pipeline", "id": "p1"}},
}


async def test_every_answer_of_the_application_names_the_server(
    start_server: StartServer,
) -> None:
    server = await start_server("memory", cors_origins=(APP,))
    session, url = server.session, server.url
    answers = {
        "fast path": await session.post(f"{url}/graphql", json=CHECK),
        "general path": await session.post(f"{url}/graphql", json={"query": "{ __typename }"}),
        "bad body": await session.post(
            f"{url}/graphql", data=b"{", headers={"Content-Type": "application/json"}
        ),
        "too large": await session.post(
            f"{url}/graphql",
            data=b" " * (5 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        ),
        "not found": await session.get(f"{url}/nowhere"),
        "method": await session.put(f"{url}/graphql"),
        "health": await session.get(f"{url}/healthz"),
        "metrics": await session.get(f"{url}/metrics"),
        "panel": await session.get(f"{url}/ui/"),
        "ofrep": await session.post(
            f"{url}/ofrep/v1/evaluate/flags/speedups", json={"context": {"targetingKey": "p1"}}
        ),
        "preflight": await session.options(
            f"{url}/graphql",
            headers={"Origin": APP, "Access-Control-Request-Method": "POST"},
        ),
        "refused preflight": await session.options(
            f"{url}/graphql",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ),
    }
    statuses = {name: answer.status for name, answer in answers.items()}
    assert statuses["fast path"] == 200
    assert statuses["too large"] == 413
    assert statuses["not found"] == 404
    assert statuses["method"] == 405
    assert statuses["preflight"] == 204
    assert statuses["refused preflight"] == 403
    named = {name: answer.headers.get("Server") for name, answer in answers.items()}
    assert named == dict.fromkeys(answers, SERVER)
    async with session.ws_connect(
        f"{url.replace('http', 'ws', 1)}/graphql", protocols=["graphql-transport-ws"]
    ) as ws:
        assert ws._response.headers.get("Server") == SERVER


async def test_answers_the_application_never_sees_name_the_server_too() -> None:
    with serve() as process:
        reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await writer.drain()
        head = (await asyncio.wait_for(reader.read(65536), 10)).decode("latin-1")
        writer.close()
        assert head.split(" ", 2)[1] == "400"
        headers = head.split("\r\n\r\n", 1)[0].lower()
        assert f"\r\nserver: {SERVER}\r\n" in headers
        assert "aiohttp" not in head.lower()
        assert "python" not in head.lower()
