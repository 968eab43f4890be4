"""Bytes that used to reach a traceback: each is answered with a 4xx or a typed error, in
time, and the log holds no traceback (one decoder for every body: bounded nesting, no
NaN, no repeated key however it is written; expiry times in a range every store holds)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from features_gql import FeaturesAPI
from features_gql.transfer import Importer, ImportStopped
from features_gql_plugins.memory_store import MemoryStore
from tests.conftest import Server, StartServer

TOKEN = "drill-token-0123456789abcdef"
DEEP_LIST = "[" * 300 + "]" * 300
DEEP_OBJECT = '{"a":' * 300 + "1" + "}" * 300


def variables(value: str) -> str:
    return '{"query": "{ revision }", "variables": {"x": ' + value + "}}"


def context(value: str) -> str:
    return '{"context": {"targetingKey": "pipeline:p1", "x": ' + value + "}}"


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def post(server: Server, path: str, body: str, **headers: str) -> tuple[int, Any]:
    async with asyncio.timeout(1):
        async with server.session.post(
            server.url + path,
            data=body.encode(),
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/graphql", variables(DEEP_LIST), 400, "254"),
        ("/graphql", variables(DEEP_OBJECT), 400, "254"),
        ("/graphql", variables("NaN"), 400, "JSON"),
        # A repeated key whose value hides a colon written as \u003a: the second operation
        # must not run.
        ("/graphql", r'{"query": "{ a }", "x": "\"\u003a", "query": "{ revision }"}', 400, "query"),
        ("/graphql", r'{"query": "{ revision }", "q\u0075ery": "{ a }"}', 400, "query"),
        ("/ofrep/v1/evaluate/flags/speedups", context(DEEP_OBJECT), 400, "254"),
        ("/ofrep/v1/evaluate/flags", context(DEEP_LIST), 400, "254"),
        ("/admin/faults", '{"error_rate": NaN}', 400, "JSON object"),
        ("/admin/faults", '{"error_rate": ' + DEEP_LIST + "}", 400, "254"),
        ("/admin/faults", '{"error_rate": 0.1, "error_r\\u0061te": 0.9}', 400, "error_rate"),
    ],
)
async def test_hostile_bodies_are_refused_with_a_4xx(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: str,
    status: int,
    needle: str,
) -> None:
    server = await start_server({"plugin": "failing", "inner": "memory"}, admin_token=TOKEN)
    with caplog.at_level(logging.INFO):
        admin = {"Authorization": f"Bearer {TOKEN}"} if path.startswith("/admin") else {}
        got, answer = await post(server, path, body, **admin)
    assert got == status, answer
    assert needle in str(answer)
    no_traceback(caplog)
    async with server.session.get(server.url + "/healthz") as health:
        assert health.status == 200


DEFINE = """mutation($at: DateTime) { defineFeature(input: {name: "x", expiresAt: $at}) {
  __typename ... on InvalidInput { field message } } }"""


@pytest.mark.parametrize(
    ("at", "typename"),
    [
        ("9999-12-31T23:59:59-23:59", "InvalidInput"),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+23:59", "InvalidInput"),  # before year 1 in UTC
        ("1969-12-31T23:59:59.999Z", "InvalidInput"),
        ("1970-01-01T00:00:00Z", "FeatureDefinitionChange"),
        ("9999-12-31T23:59:59.999Z", "FeatureDefinitionChange"),
        ("9999-12-31T23:59:59.999-00:00", "FeatureDefinitionChange"),
    ],
)
async def test_expiry_times_outside_what_every_store_holds_are_typed_errors(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, at: str, typename: str
) -> None:
    server = await start_server("memory")
    with caplog.at_level(logging.INFO):
        answer = await server.gql(DEFINE, {"at": at})
    assert answer.errors == [], answer.body
    result = answer.data["defineFeature"]
    assert result["__typename"] == typename
    if typename == "InvalidInput":
        assert result["field"] == "input.expiresAt"
        assert "1970-01-01T00:00:00Z" in result["message"]
    no_traceback(caplog)


async def test_an_import_with_an_expiry_out_of_range_stops_at_that_line() -> None:
    api = FeaturesAPI(MemoryStore())
    lines = [
        b'{"definition": {"name": "ok", "expiresAt": "2030-01-31T00:00:00Z"}}\n',
        b'{"definition": {"name": "far", "expiresAt": "9999-12-31T23:59:59-23:59"}}\n',
    ]
    with pytest.raises(ImportStopped) as stopped:
        await Importer(api).run(lines)
    assert stopped.value.line == 2
    assert "1970-01-01T00:00:00Z" in str(stopped.value)
    assert [f.name for f in (await api.list_features(first=10)).features] == ["ok"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/graphql"),
        ("GET", "/graphql?query=%7B%20revision%20%7D"),
        ("POST", "/ofrep/v1/evaluate/flags"),
        ("POST", "/ofrep/v1/evaluate/flags/speedups"),
        ("GET", "/admin/faults"),
        ("GET", "/metrics"),
        ("GET", "/ui/"),
    ],
)
async def test_two_authorization_headers_are_refused_at_every_way_in(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """Which of two tokens a request speaks for is not guessed (the first, as every way
    in read it, while a proxy in front might have checked the last)."""
    server = await start_server("memory", admin_token=TOKEN)
    headers = [
        ("Authorization", f"Bearer {TOKEN}"),
        ("Authorization", "Bearer someone-else"),
        ("Content-Type", "application/json"),
    ]
    with caplog.at_level(logging.INFO):
        async with asyncio.timeout(1):
            async with server.session.request(
                method, server.url + path, headers=headers, data=b'{"query": "{ revision }"}'
            ) as response:
                status, body = response.status, await response.json(content_type=None)
    assert status == 400, body
    assert "one Authorization header" in str(body)
    no_traceback(caplog)
    # One is served as ever.
    async with server.session.request(
        method, server.url + path, headers=headers[::2], data=b'{"query": "{ revision }"}'
    ) as response:
        assert response.status != 400 or "Authorization" not in await response.text()


async def test_two_authorization_headers_are_refused_on_the_websocket_upgrade(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    headers = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await server.session.ws_connect(
            server.url.replace("http://", "ws://") + "/graphql",
            protocols=["graphql-transport-ws"],
            headers=headers,
        )
    assert refused.value.status == 400
