"""CORS: browser frontends on the configured origins may call the API; no other origin
gets a CORS header."""

from __future__ import annotations

from typing import Any

from tests.conftest import StartServer

APP = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}
QUERY = {"query": "{ revision }"}


def cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


async def test_preflight_from_an_allowed_origin_allows_authorization_and_json(
    start_server: StartServer,
) -> None:
    server = await start_server("memory", cors_origins=(APP, "http://localhost:5173"))
    async with server.session.options(f"{server.url}/graphql", headers=PREFLIGHT) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"GET", "POST"}
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type"} <= {h.strip() for h in allowed.split(",")}
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in response.headers["Vary"]
    other = {**PREFLIGHT, "Origin": "http://localhost:5173"}
    async with server.session.options(f"{server.url}/graphql", headers=other) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


async def test_requests_from_an_allowed_origin_may_read_answers_and_errors(
    start_server: StartServer,
) -> None:
    server = await start_server("memory", cors_origins=(APP,))
    answer = await server.gql("{ revision }", headers={"Origin": APP})
    assert answer.data == {"revision": 0}
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert answer.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
    assert answer.headers["Vary"] == "Origin"
    # Errors too, or the page could not tell what went wrong.
    async with server.session.get(f"{server.url}/nope", headers={"Origin": APP}) as response:
        assert response.status == 404
        assert response.headers["Access-Control-Allow-Origin"] == APP
    # Origins are compared as browsers send them, in lower case.
    answer = await server.gql("{ revision }", headers={"Origin": APP.upper()})
    assert answer.headers["Access-Control-Allow-Origin"] == APP.upper()


async def test_other_origins_get_no_cors_headers(start_server: StartServer) -> None:
    server = await start_server("memory", cors_origins=(APP,))
    for origin in ("https://evil.example", "https://app.example.com.evil.example", "null"):
        preflight = {**PREFLIGHT, "Origin": origin}
        async with server.session.options(f"{server.url}/graphql", headers=preflight) as response:
            assert response.status == 403
            body = await response.json()
            assert body["errors"][0]["extensions"]["code"] == "ORIGIN_NOT_ALLOWED"
            assert cors_headers(response.headers) == {}
        answer = await server.gql("{ revision }", headers={"Origin": origin})
        assert answer.status == 200  # the browser, not the server, withholds the answer
        assert cors_headers(answer.headers) == {}
        assert answer.headers["Vary"] == "Origin"
    # Without an Origin (servers, tools) nothing changes.
    answer = await server.gql("{ revision }")
    assert cors_headers(answer.headers) == {}
    assert "Vary" not in answer.headers


async def test_without_configured_origins_there_is_no_cross_origin_access(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    async with server.session.options(f"{server.url}/graphql", headers=PREFLIGHT) as response:
        assert response.status == 405
        assert cors_headers(response.headers) == {}
    answer = await server.gql("{ revision }", headers={"Origin": APP})
    assert cors_headers(answer.headers) == {}


async def test_any_origin(start_server: StartServer) -> None:
    server = await start_server("memory", cors_origins=("*",))
    preflight = {**PREFLIGHT, "Origin": "https://anywhere.example"}
    async with server.session.options(f"{server.url}/graphql", headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    answer = await server.gql("{ revision }", headers={"Origin": "https://anywhere.example"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in answer.headers
