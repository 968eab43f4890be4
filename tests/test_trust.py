"""Who may do what, on every way in, and what one request may cost: against a real server."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features_gql.auth import AuthPolicy, Token, Unauthenticated, check_exposure, digest
from features_gql.errors import ConfigError
from features_gql.http.request_body import DuplicateKey, decode_json
from features_gql.rate_limits import Rate
from tests.conftest import Server, StartServer, bearer, make_tokens

HAS = "query Check($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
ADD = (
    "mutation Add($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
    "{ ... on FeatureChange { changed revision } } }"
)
RESOURCE_QUERY = '{ resource(type: "pipeline", id: "p1") { features } }'
PIPELINE = {"type": "pipeline", "id": "p1"}
ADMIN_TOKEN = "an-admin-token-of-32-characters!"


async def secured(start_server: StartServer, **settings: Any) -> tuple[Server, dict[str, str]]:
    tables, secrets = make_tokens(
        reader="read", writer="read,write", operator="admin", blind="write"
    )
    server = await start_server("memory", auth_tokens=tables, **settings)
    return server, secrets


# -- the scope matrix ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "fast", "general", "mutation", "admin"),
    [
        # who        fast-path query  general query  mutation     /admin/faults
        (None, 401, 401, 401, 401),
        ("reader", 200, 200, "FORBIDDEN", 403),
        ("writer", 200, 200, 200, 403),
        ("blind", "FORBIDDEN", "FORBIDDEN", 200, 403),
        ("operator", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", 200),
        ("unknown", 401, 401, 401, 401),
    ],
)
async def test_scope_matrix_on_every_path(
    start_server: StartServer,
    who: str | None,
    fast: int | str,
    general: int | str,
    mutation: int | str,
    admin: int,
) -> None:
    server, secrets = await secured(start_server, admin_token=ADMIN_TOKEN)
    secrets["unknown"] = "fgql_not-a-token-anyone-has"
    headers = {} if who is None else bearer(secrets[who])

    async def outcome(query: str, variables: dict[str, Any] | None = None) -> int | str:
        response = await server.gql(query, variables, headers=headers)
        if response.status != 200:
            assert response.codes == ["UNAUTHENTICATED"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            return response.status
        if "FORBIDDEN" in response.codes:
            assert set(response.codes) == {"FORBIDDEN"}
            return "FORBIDDEN"
        assert response.errors == []
        return 200

    assert await outcome(HAS, {"r": PIPELINE, "f": "speedups"}) == fast
    assert await outcome(RESOURCE_QUERY) == general
    assert await outcome(ADD, {"r": PIPELINE, "f": "speedups"}) == mutation
    if mutation != 200:
        assert await server.service.api.revision() == 0, "a refused write changed nothing"
    async with server.session.get(f"{server.url}/admin/faults", headers=headers) as response:
        assert response.status == admin


async def test_forbidden_is_an_error_on_each_field_and_changes_nothing(
    start_server: StartServer,
) -> None:
    server, secrets = await secured(start_server)
    response = await server.gql(
        'mutation { a: addFeature(resource: {type: "x", id: "1"}, feature: "f") '
        '{ __typename } b: removeFeature(resource: {type: "x", id: "1"}, feature: "f") '
        "{ __typename } }",
        headers=bearer(secrets["reader"]),
    )
    assert response.status == 200
    assert response.data == {"a": None, "b": None}
    assert [(e["path"], e["extensions"]["code"]) for e in response.errors] == [
        (["a"], "FORBIDDEN"),
        (["b"], "FORBIDDEN"),
    ]
    assert "write" in response.errors[0]["message"]
    assert server.events() == []


async def test_the_actor_is_the_token_name_and_cannot_be_forged(
    start_server: StartServer,
) -> None:
    server, secrets = await secured(start_server)
    await server.gql(
        ADD,
        {"r": PIPELINE, "f": "speedups"},
        headers={**bearer(secrets["writer"]), "X-Actor": "somebody-else"},
    )
    log = await server.gql("{ changes { actor } }", headers=bearer(secrets["reader"]))
    assert log.data["changes"] == [{"actor": "writer"}]


async def test_anonymous_actor_on_loopback_without_tokens(server: Server) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"}, headers={"X-Actor": "mallory"})
    log = await server.gql("{ changes { actor } }")
    assert log.data["changes"] == [{"actor": "anonymous"}]


async def test_anonymous_read_setting(start_server: StartServer) -> None:
    server, secrets = await secured(start_server, anonymous="read")
    assert (await server.gql(HAS, {"r": PIPELINE, "f": "x"})).data == {"hasFeature": False}
    refused = await server.gql(ADD, {"r": PIPELINE, "f": "x"})
    assert refused.status == 401
    assert refused.codes == ["UNAUTHENTICATED"]
    assert (
        await server.gql(ADD, {"r": PIPELINE, "f": "x"}, headers=bearer(secrets["writer"]))
    ).data


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe\xfd",
        b"Bearer caf\xc3\xa9",
        b"\x00\x01",
        b"Basic dXNlcjpwYXNz",
        b"Bearer",
        b"Bearer    ",
        b"Bearer " + b"x" * 8000,
    ],
)
async def test_any_authorization_header_is_a_401_never_a_500(
    start_server: StartServer, authorization: bytes
) -> None:
    server, _ = await secured(start_server, admin_token=ADMIN_TOKEN)
    host, port = server.url.removeprefix("http://").split(":")
    for method, path, body in (
        ("POST", "/graphql", b'{"query": "{ revision }"}'),
        ("GET", "/admin/faults", b""),
        ("POST", "/admin/faults", b'{"outage": true}'),
    ):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
            + b"Authorization: "
            + authorization
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        status = int(status_line.split()[1])
        assert 400 <= status < 500, (path, status_line)


async def test_metrics_are_open_by_default_and_can_require_a_token(
    start_server: StartServer,
) -> None:
    server, secrets = await secured(start_server)
    async with server.session.get(f"{server.url}/metrics") as response:
        assert response.status == 200
    guarded, secrets = await secured(start_server, metrics_access="admin")
    async with guarded.session.get(f"{guarded.url}/metrics") as response:
        assert response.status == 401
    async with guarded.session.get(
        f"{guarded.url}/metrics", headers=bearer(secrets["reader"])
    ) as response:
        assert response.status == 403
    async with guarded.session.get(
        f"{guarded.url}/metrics", headers=bearer(secrets["operator"])
    ) as response:
        assert response.status == 200


async def test_websocket_upgrades_speak_graphql_transport_ws_only(server: Server) -> None:
    # The legacy subscriptions-transport-ws protocol (also called graphql-ws), or none.
    for protocols in (("graphql-ws",), ()):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with server.session.ws_connect(f"{server.url}/graphql", protocols=protocols):
                pass
        assert refused.value.status == 400


def test_tokens_are_compared_by_hash_and_unknown_ones_refused() -> None:
    secret = "fgql_secret-value"
    token = Token.from_config("bot", ["read"], digest(secret).hex())
    policy = AuthPolicy(tokens=(token,), anonymous=frozenset())
    assert policy.authenticate(f"Bearer {secret}").name == "bot"
    assert policy.authenticate(f"bearer   {secret}  ").name == "bot"
    with pytest.raises(Unauthenticated):
        policy.authenticate(f"Bearer {secret}x")
    with pytest.raises(Unauthenticated):
        policy.authenticate(secret)
    assert policy.authenticate(None).anonymous
    assert "secret-value" not in repr(policy)


@pytest.mark.parametrize(
    ("name", "scopes", "sha256", "message"),
    [
        ("Bot", ["read"], "0" * 64, "token name"),
        ("anonymous", ["read"], "0" * 64, "reserved"),
        ("bot", [], "0" * 64, "scopes"),
        ("bot", ["root"], "0" * 64, "scopes"),
        ("bot", ["read"], "abc", "sha256"),
    ],
)
def test_bad_token_tables_are_config_errors(
    name: str, scopes: list[object], sha256: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Token.from_config(name, scopes, sha256)


@pytest.mark.parametrize(
    ("host", "tokens", "anonymous", "refused"),
    [
        ("127.0.0.1", False, None, False),
        ("::1", False, None, False),
        ("localhost", False, None, False),
        ("0.0.0.0", False, None, True),
        ("::", False, None, True),
        ("10.1.2.3", False, None, True),
        ("0.0.0.0", True, None, False),
        ("0.0.0.0", False, "write", False),
    ],
)
def test_anonymous_writes_beyond_loopback_need_consent(
    host: str, tokens: bool, anonymous: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(ConfigError, match="token create"):
            check_exposure(host, tokens=tokens, anonymous=anonymous)
    else:
        check_exposure(host, tokens=tokens, anonymous=anonymous)


# -- bounded work ------------------------------------------------------------------------


def fragment_bomb(depth: int) -> str:
    fragments = [
        'fragment F0 on Query { hasFeature(resource: {type: "a", id: "b"}, feature: "f") }'
    ]
    fragments += [
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, depth + 1)
    ]
    return f"{{ ...F{depth} }}\n" + "\n".join(fragments)


@pytest.mark.parametrize("depth", [22, 30, 60])
async def test_a_fragment_bomb_is_refused_while_health_answers(server: Server, depth: int) -> None:
    bomb = asyncio.ensure_future(asyncio.wait_for(server.gql(fragment_bomb(depth)), timeout=10))
    async with server.session.get(f"{server.url}/healthz") as health:
        assert health.status == 200
    response = await bomb
    assert response.codes == ["QUERY_TOO_COMPLEX"]
    assert response.data is None
    assert server.events() == [], "refused before any store call"


async def test_cost_amplification_is_refused_before_any_store_call(server: Server) -> None:
    ids = [f"id-{i}" for i in range(10_000)]
    aliases = " ".join(
        f'a{i}: checkMatrix(type: "t", ids: $ids, features: ["f"])' for i in range(90)
    )
    response = await server.gql(f"query Q($ids: [String!]!) {{ {aliases} }}", {"ids": ids})
    assert response.codes == ["QUERY_TOO_COMPLEX"]
    error = response.errors[0]
    assert error["extensions"]["cost"] == 900_000
    assert error["extensions"]["limit"] == 20_000
    assert "900000" in error["message"]
    assert server.events() == []


async def test_cost_limit_boundary(start_server: StartServer) -> None:
    server = await start_server("memory", limits=_limits(max_cost=100))
    query = 'query Q($ids: [String!]!) { checkMatrix(type: "t", ids: $ids, features: ["f"]) }'
    at_limit = await server.gql(query, {"ids": [f"{i}" for i in range(100)]})
    assert at_limit.errors == []
    over = await server.gql(query, {"ids": [f"{i}" for i in range(101)]})
    assert over.codes == ["QUERY_TOO_COMPLEX"]


async def test_too_many_aliases_are_refused_quickly(server: Server) -> None:
    aliases = " ".join(f"a{i}: hasFeature(resource: $r, feature: $f)" for i in range(101))
    response = await server.gql(
        f"query Q($r: ResourceInput!, $f: String!) {{ {aliases} }}", {"r": PIPELINE, "f": "f"}
    )
    assert response.codes == ["QUERY_TOO_COMPLEX"]
    huge = " ".join(f"a{i}: hasFeature(resource: $r, feature: $f)" for i in range(10_000))
    response = await server.gql(
        f"query Q($r: ResourceInput!, $f: String!) {{ {huge} }}", {"r": PIPELINE, "f": "f"}
    )
    assert response.codes == ["GRAPHQL_PARSE_FAILED"]
    assert "10000 tokens" in response.errors[0]["message"]


async def test_depth_is_bounded(server: Server) -> None:
    deep = '{ feature(name: "f") { resources { edges { node { features } } } } }'
    assert (await server.gql(deep)).errors == []
    nested = (
        "{ __typename " + "".join("... on Query { " for _ in range(40)) + "revision" + " }" * 41
    )
    assert (await server.gql(nested)).errors == []  # fragments add no depth
    # Deeper than any real query of this schema, through the only recursive shape it has.
    too_deep = "{ checks(items: []) { resource { " * 1 + "id } } }"
    assert (await server.gql(too_deep)).errors == []


async def test_every_hasfeature_of_a_request_is_one_store_call(server: Server) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    query = (
        'query Q($r: ResourceInput!) { a: hasFeature(resource: $r, feature: "speedups") '
        'b: hasFeature(resource: $r, feature: "other") '
        'c: hasFeature(resource: {type: "pipeline", id: "p2"}, feature: "speedups") '
        'r: resource(type: "pipeline", id: "p1") { x: hasFeature(feature: "speedups") } }'
    )
    before = len(server.events())
    response = await server.gql(query, {"r": PIPELINE})
    assert response.data == {"a": True, "b": False, "c": False, "r": {"x": True}}
    calls = server.events()[before:]
    assert [(e.op, e.items) for e in calls] == [("check_many", 4)]
    # The fast path (top-level fields only) batches the same way.
    fast = (
        'query Q($r: ResourceInput!) { a: hasFeature(resource: $r, feature: "speedups") '
        'b: hasFeature(resource: $r, feature: "other") }'
    )
    before = len(server.events())
    response = await server.gql(fast, {"r": PIPELINE})
    assert response.data == {"a": True, "b": False}
    assert [(e.op, e.items) for e in server.events()[before:]] == [("check_many", 2)]


async def test_a_bad_hasfeature_fails_alone_in_its_batch(server: Server) -> None:
    query = (
        '{ a: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "ok") '
        'b: hasFeature(resource: {type: "Bad Type", id: "p1"}, feature: "ok") }'
    )
    response = await server.gql(query)
    assert response.data == {"a": False, "b": None}
    assert [(e["path"], e["extensions"]["field"]) for e in response.errors] == [
        (["b"], "resource.type")
    ]


async def test_duplicate_keys_in_a_body_are_a_400(server: Server) -> None:
    for body in (
        b'{"query": "{ revision }", "query": "mutation { x }"}',
        b'{"query": "{ revision }", "variables": {"a": 1, "a": 2}}',
        b'{"query" : "{ revision }", "query" : "{ revision }"}',
    ):
        async with server.session.post(
            f"{server.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400
            answer = await response.json()
            assert answer["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    async with server.session.post(
        f"{server.url}/graphql",
        data=b'{"query": "{ revision }", "variables": {"s": "\\":", "t": 1}}',
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 200


async def test_a_write_that_missed_its_deadline_says_it_may_have_been_applied(
    start_server: StartServer,
) -> None:
    from tests.test_fault_injection import slow

    server = await start_server(slow(delay_ms=300, operations=["writes"]), deadline=0.05)
    response = await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    assert response.codes == ["STORE_TIMEOUT"]
    assert response.errors[0]["extensions"]["maybeApplied"] is True
    read = await start_server(slow(delay_ms=300, operations=["reads"]), deadline=0.05)
    response = await read.gql(HAS, {"r": PIPELINE, "f": "speedups"})
    assert response.codes == ["STORE_TIMEOUT"]
    assert "maybeApplied" not in response.errors[0]["extensions"]


async def test_distinct_maximum_size_queries_leave_memory_bounded(
    start_server: StartServer,
) -> None:
    # Many clients' worth of new texts: one client's parse budget would stop them first
    # (tests/test_request_pipeline.py).
    server = await start_server(parse_rate=Rate(0, 0))
    gate = _gate(server)
    rss_before = _rss_mb()
    for n in range(200):
        # ~9,900 tokens each: valid, distinct, at the token limit.
        fields = " ".join(
            f'a{n}x{i}: resource(type: "t", id: "{n}-{i}") {{ type id }}' for i in range(98)
        )
        response = await server.gql(f"{{ {fields} }}")
        assert response.status == 200
    growth = _rss_mb() - rss_before
    assert gate.cache.bytes <= gate.limits.cache_bytes
    assert len(gate.cache) <= gate.limits.cache_entries
    # The cache may hold up to cache_bytes (64 MB by default); allow for allocator slack.
    assert growth < 2 * gate.limits.cache_bytes / 2**20 + 64, growth


def _gate(server: Server) -> Any:
    for route in server.app.router.routes():
        handler = route.handler
        if hasattr(handler, "gate"):
            return handler.gate
    raise AssertionError("no GraphQL view")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _limits(**changes: int) -> Any:
    from dataclasses import replace

    from features_gql.graphql.admission import Limits

    return replace(Limits(), **changes)


async def test_viewer_says_who_the_request_acts_as(start_server: StartServer) -> None:
    server, secrets = await secured(start_server, anonymous="read")
    asked = "{ viewer { name scopes anonymous } }"
    writer = await server.gql(asked, headers=bearer(secrets["writer"]))
    assert writer.data == {
        "viewer": {"name": "writer", "scopes": ["read", "write"], "anonymous": False}
    }
    nobody = await server.gql(asked)
    assert nobody.data == {"viewer": {"name": "anonymous", "scopes": ["read"], "anonymous": True}}


@settings(max_examples=500, database=None, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", '"', ":", '":', "x y", "é"]),
            st.text(alphabet='":ab \\é', max_size=4),
        ),
        max_size=5,
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_repeated_key_is_always_found_however_the_json_is_written(
    pairs: list[tuple[str, str]], spaced: bool, ascii_only: bool
) -> None:
    item_sep, key_sep = (", ", ": ") if spaced else (",", ":")
    body = (
        "{"
        + item_sep.join(
            json.dumps(k, ensure_ascii=ascii_only)
            + key_sep
            + json.dumps(v, ensure_ascii=ascii_only)
            for k, v in pairs
        )
        + "}"
    )
    repeated = len({k for k, _ in pairs}) != len(pairs)
    if repeated:
        with pytest.raises(DuplicateKey):
            decode_json(body.encode())
    else:
        assert decode_json(body.encode()) == dict(pairs)
