"""Whatever bytes a client puts in its headers, whatever query it builds from the schema,
the answer of a real `features-gql serve` is a 2xx or a 4xx with a JSON error, never a 5xx
or a traceback; and every answer says `Server: features-gql`, with no versions."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import hypothesis_graphql
import pytest
from graphql import IntValueNode, StringValueNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features_gql.graphql.schema import schema_sdl
from tests.real_server import ServeProcess, serve

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "an-admin-token-of-32-characters!"
ORIGIN = "https://app.example.com"
LIMIT = 4 * 1024 * 1024  # the service's request body limit


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    env = {"FEATURES_GQL_ADMIN_TOKEN": ADMIN_TOKEN, "FEATURES_GQL_CORS_ORIGINS": ORIGIN}
    with serve(env=env) as process:
        yield process


def request_bytes(method: str, target: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; the status, headers and body of the answer."""
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            answer = await reader.read()
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_clean(status: int, headers: dict[str, str], body: bytes, sent: object) -> None:
    assert status < 500, (sent, status, body[:500])
    assert b"Traceback" not in body, sent
    assert headers.get("server") == "features-gql", (sent, headers)
    if status >= 400:
        error = json.loads(body)["errors"][0]
        assert error["message"], sent
        assert error["extensions"]["code"], sent


# Every control character, bytes that are not UTF-8 (alone, truncated, overlong, a UTF-8
# encoded surrogate), valid multi-byte UTF-8, and a value past aiohttp's line limit.
HOSTILE_VALUES = [
    *(bytes([b]) for b in [*range(0x20), 0x7F]),
    b"\x80",
    b"\x9f",
    b"\xa0",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98",
    b"\xfe\xff",
    b"Bearer \xff\xfe",
    b"Bearer " + ADMIN_TOKEN.encode() + b"\xff",
    b"application/json\xff",
    b"application/json; charset=\xff",
    "José 😀".encode(),
    b"a" * 9000,
]
HOSTILE_HEADERS = [
    "X-Request-ID",
    "Accept",
    "Content-Type",
    "Origin",
    "X-Actor",
    "Authorization",
    "Expect",
    "Upgrade",
    "Cookie",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
]
ADD = b'{"query":"mutation { addFeature(resource: {type: \\"a\\", id: \\"b\\"}, feature: \\"f\\") { __typename } }"}'  # noqa: E501


async def test_no_byte_in_any_header_gets_a_5xx_or_a_traceback(server: ServeProcess) -> None:
    targets = [
        ("POST", "/graphql", ADD),
        ("GET", "/graphql?query=%7Brevision%7D", b""),
        ("POST", "/admin/faults", b"{}"),
        ("OPTIONS", "/graphql", b""),
        ("GET", "/nope", b""),
    ]
    limit = asyncio.Semaphore(16)

    async def attempt(method: str, target: str, body: bytes, name: str, value: bytes) -> None:
        headers = {"Content-Type": b"application/json", name: value}
        if method == "OPTIONS":
            headers.setdefault("Origin", ORIGIN.encode())
            headers.setdefault("Access-Control-Request-Method", b"POST")
        async with limit:
            answer = await exchange(server.port, request_bytes(method, target, headers, body))
        assert_clean(*answer, sent=(method, target, name, value[:40]))

    await asyncio.gather(
        *(
            attempt(method, target, body, name, value)
            for method, target, body in targets
            for name in HOSTILE_HEADERS
            for value in HOSTILE_VALUES
        )
    )
    # The change log still answers: no actor it holds trips the response.
    status, _, body = await exchange(
        server.port,
        request_bytes(
            "POST",
            "/graphql",
            {"Content-Type": b"application/json"},
            b'{"query":"{ changes(after: 0, first: 1000) { actor } }"}',
        ),
    )
    assert status == 200, body
    assert "errors" not in json.loads(body)
    log = server.log_text()
    assert "Traceback" not in log
    # Thousands of malformed requests, a handful of counted lines.
    assert log.count("malformed requests rejected") <= 4


async def test_every_answer_says_server_features_gql_and_errors_are_json(
    server: ServeProcess,
) -> None:
    json_type = {"Content-Type": b"application/json"}
    cases = {
        "ok": (request_bytes("GET", "/healthz", {}), 200, None),
        "graphql": (
            request_bytes("POST", "/graphql", json_type, b'{"query":"{ revision }"}'),
            200,
            None,
        ),
        "syntax": (request_bytes("POST", "/graphql", json_type, b'{"query":"{"}'), 200, None),
        "metrics": (request_bytes("GET", "/metrics", {}), 200, None),
        "not found": (request_bytes("GET", "/nope", {}), 404, "NOT_FOUND"),
        "graphql method": (request_bytes("DELETE", "/graphql", {}), 405, "METHOD_NOT_ALLOWED"),
        "router method": (request_bytes("PUT", "/healthz", {}), 405, "METHOD_NOT_ALLOWED"),
        "at the limit": (
            request_bytes("POST", "/graphql", json_type, b" " * LIMIT),
            400,
            "BAD_REQUEST",
        ),
        "past the limit": (
            request_bytes("POST", "/graphql", json_type, b" " * (LIMIT + 1)),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        "admin": (request_bytes("GET", "/admin/faults", {}), 401, None),
        "bad request line": (b"NOT HTTP AT ALL\r\n\r\n", 400, "BAD_REQUEST"),
        "bad header": (request_bytes("GET", "/healthz", {"X-Bad": b"\x01"}), 400, "BAD_REQUEST"),
        "undecodable header": (
            request_bytes("GET", "/healthz", {"X-Actor": b"\xff"}),
            400,
            "INVALID_HEADER",
        ),
        # HTTP lets a server ignore an expectation it does not know.
        "odd expectation": (request_bytes("GET", "/healthz", {"Expect": b"tea"}), 200, None),
    }
    for name, (raw, expected_status, code) in cases.items():
        status, headers, body = await exchange(server.port, raw)
        assert status == expected_status, (name, body[:300])
        assert headers["server"] == "features-gql", name
        if code is not None:
            assert json.loads(body)["errors"][0]["extensions"]["code"] == code, name
    status, headers, body = await exchange(server.port, cases["past the limit"][0])
    assert json.loads(body)["errors"][0]["message"] == (
        f"Maximum request body size {LIMIT} exceeded."
    )
    status, headers, body = await exchange(server.port, cases["router method"][0])
    assert "GET" in headers["allow"]


# -- schema-driven fuzzing -------------------------------------------------------------------

FUZZED_HEADERS = ["X-Request-ID", "Accept", "Content-Type", "Authorization", "X-Actor", "Origin"]
header_values = st.one_of(
    # Any bytes but CR and LF, which would end the header line (the test above sends those).
    st.binary(max_size=40).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"application/json",
            b"application/graphql-response+json",
            b"application/json; q=0.5, application/graphql-response+json",
            b"Bearer " + ADMIN_TOKEN.encode(),
            b"Bearer nope",
            ORIGIN.encode(),
            b"*/*",
        ]
    ),
)
# Strings are valid names half the time, so mutations take effect and reads find data.
strings = st.one_of(st.sampled_from(["pipeline", "db8e9a0d", "speedups", "beta"]), st.text())
# Revisions inside the scalar's range and far outside it (negative, past 2^53 and 2^63).
revisions = st.one_of(st.integers(0, 10), st.integers(-(2**70), 2**70))
fuzzed_requests = st.tuples(
    hypothesis_graphql.from_schema(
        schema_sdl(),
        custom_scalars={
            "String": strings.map(lambda v: StringValueNode(value=v)),
            "Revision": revisions.map(lambda v: IntValueNode(value=str(v))),
        },
    ),
    st.dictionaries(st.sampled_from(FUZZED_HEADERS), header_values, max_size=4),
    st.sampled_from(["POST", "GET"]),
)


def build_request(query: str, headers: dict[str, bytes], method: str) -> bytes:
    if method == "GET":
        target = "/graphql?" + urllib.parse.urlencode({"query": query})
        return request_bytes("GET", target, headers)
    headers = {"Content-Type": b"application/json", **headers}
    return request_bytes("POST", "/graphql", headers, json.dumps({"query": query}).encode())


async def test_schema_driven_queries_and_mutations_with_fuzzed_headers(
    server: ServeProcess,
) -> None:
    examples: list[tuple[str, dict[str, bytes], str]] = []

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzzed_requests)
    def collect(example: Any) -> None:
        examples.append(example)

    collect()
    assert any(query.startswith("mutation") for query, _, _ in examples)
    limit = asyncio.Semaphore(8)

    async def attempt(query: str, headers: dict[str, bytes], method: str) -> int:
        async with limit:
            status, answer_headers, body = await exchange(
                server.port, build_request(query, headers, method)
            )
        assert_clean(status, answer_headers, body, sent=(method, query, headers))
        return status

    statuses = await asyncio.gather(*(attempt(*example) for example in examples))
    assert statuses.count(200) > len(statuses) // 4  # most headers still let queries run
    assert "Traceback" not in server.log_text()
