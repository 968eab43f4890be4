"""End to end: real HTTP requests to the real service on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broken_stores import BrokenStoresPlugin
from tests.conftest import Server, StartServer

PIPELINE = {"type": "pipeline", "id": "db8e9a0d-b9b1-4e7a-ab21-a2b289da032b"}

HAS = "query ($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
ADD = """mutation ($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) {
    __typename
    ... on FeatureChange { resource { type id features } feature changed revision }
    ... on InvalidInput { field rule message }
  }
}"""
REMOVE = ADD.replace("addFeature", "removeFeature")


async def has(server: Server, resource: dict[str, str], feature: str) -> bool:
    response = await server.gql(HAS, {"r": resource, "f": feature})
    assert response.status == 200, response.body
    assert response.errors == []
    value: bool = response.data["hasFeature"]
    return value


async def test_add_has_remove_round_trip(server: Server) -> None:
    assert await has(server, PIPELINE, "speedups") is False

    added = await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    assert added.data["addFeature"] == {
        "__typename": "FeatureChange",
        "resource": {**PIPELINE, "features": ["speedups"]},
        "feature": "speedups",
        "changed": True,
        "revision": 1,
    }
    assert await has(server, PIPELINE, "speedups") is True

    again = await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    assert again.data["addFeature"]["changed"] is False
    assert again.data["addFeature"]["revision"] == 1

    removed = await server.gql(REMOVE, {"r": PIPELINE, "f": "speedups"})
    assert removed.data["removeFeature"]["changed"] is True
    assert removed.data["removeFeature"]["revision"] == 2
    assert removed.data["removeFeature"]["resource"]["features"] == []
    assert await has(server, PIPELINE, "speedups") is False

    absent = await server.gql(REMOVE, {"r": PIPELINE, "f": "speedups"})
    assert absent.data["removeFeature"]["changed"] is False


async def test_resource_query(server: Server) -> None:
    for feature in ("speedups", "beta"):
        await server.gql(ADD, {"r": PIPELINE, "f": feature})
    response = await server.gql(
        """query ($t: String!, $i: String!) {
          resource(type: $t, id: $i) { type id features on: hasFeature(feature: "beta")
                                       off: hasFeature(feature: "gamma") }
        }""",
        {"t": PIPELINE["type"], "i": PIPELINE["id"]},
    )
    assert response.data == {
        "resource": {**PIPELINE, "features": ["beta", "speedups"], "on": True, "off": False}
    }


async def test_many_resources_in_one_request_make_one_store_call(server: Server) -> None:
    for i in range(3):
        await server.gql(ADD, {"r": {"type": "app", "id": f"a{i}"}, "f": f"f{i}"})
    before = len(server.events())
    response = await server.gql(
        """{ a: resource(type: "app", id: "a0") { features x: hasFeature(feature: "f0") }
             b: resource(type: "app", id: "a1") { features x: hasFeature(feature: "f0") }
             c: resource(type: "app", id: "a2") { features x: hasFeature(feature: "f2") } }"""
    )
    assert response.data == {
        "a": {"features": ["f0"], "x": True},
        "b": {"features": ["f1"], "x": False},
        "c": {"features": ["f2"], "x": True},
    }
    # This request's calls only: on a store processes share, the catalog's follower reads
    # the change log in the background meanwhile.
    rid = response.headers["X-Request-ID"]
    ops = [event.op for event in server.events()[before:] if event.request_id == rid]
    assert sorted(ops) == ["check_many", "features_of"]


async def test_checks_answer_in_order_with_one_store_call(server: Server) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    items = [
        {"resource": PIPELINE, "feature": "speedups"},
        {"resource": {"type": "app", "id": "x"}, "feature": "speedups"},
        {"resource": PIPELINE, "feature": "other"},
        {"resource": PIPELINE, "feature": "speedups"},
    ]
    before = len(server.events())
    response = await server.gql(
        "query ($items: [CheckInput!]!) { checks(items: $items) "
        "{ resource { type id } feature enabled } }",
        {"items": items},
    )
    assert [c["enabled"] for c in response.data["checks"]] == [True, False, False, True]
    assert [c["resource"] for c in response.data["checks"]] == [i["resource"] for i in items]
    assert [c["feature"] for c in response.data["checks"]] == [i["feature"] for i in items]
    rid = response.headers["X-Request-ID"]
    calls = [(e.op, e.items) for e in server.events()[before:] if e.request_id == rid]
    assert calls == [("check_many", 4)]


async def test_invalid_check_names_its_item(server: Server) -> None:
    response = await server.gql(
        "query ($items: [CheckInput!]!) { checks(items: $items) { enabled } }",
        {
            "items": [
                {"resource": PIPELINE, "feature": "ok"},
                {"resource": PIPELINE, "feature": "NO"},
            ]
        },
    )
    assert response.status == 200
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == "items[1].feature"


async def test_feature_resources_paginate(server: Server) -> None:
    ids = [f"p{i:02}" for i in range(7)]
    for rid in ids:
        await server.gql(ADD, {"r": {"type": "pipeline", "id": rid}, "f": "speedups"})
    await server.gql(ADD, {"r": {"type": "app", "id": "zz"}, "f": "speedups"})
    query = """query ($after: String, $type: String) {
      feature(name: "speedups") { name resources(first: 3, after: $after, type: $type) {
        edges { cursor node { type id } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        response = await server.gql(query, {"after": after, "type": "pipeline"})
        connection = response.data["feature"]["resources"]
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        info = connection["pageInfo"]
        assert info["hasPreviousPage"] is (after is not None)
        pages += 1
        if not info["hasNextPage"]:
            break
        assert info["endCursor"] == connection["edges"][-1]["cursor"]
        after = info["endCursor"]
    assert seen == ids
    assert pages == 3

    everything = await server.gql(query, {"after": None, "type": None})
    first = everything.data["feature"]["resources"]["edges"][0]["node"]
    assert first == {"type": "app", "id": "zz"}


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"after": "not-a-cursor"}, "after"),
        ({"first": -1}, "first"),
        ({"first": 1001}, "first"),
        ({"type": "Not A Slug"}, "type"),
    ],
)
async def test_bad_pagination_arguments_are_bad_user_input(
    server: Server, variables: dict[str, object], field: str
) -> None:
    response = await server.gql(
        """query ($after: String, $first: Int, $type: String) {
          feature(name: "speedups") { resources(first: $first, after: $after, type: $type) {
            edges { cursor } } } }""",
        variables,
    )
    assert response.status == 200
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == field


@pytest.mark.parametrize(
    ("resource", "feature", "field", "rule"),
    [
        ({"type": "Pipeline", "id": "x"}, "speedups", "resource.type", "slug"),
        ({"type": "", "id": "x"}, "speedups", "resource.type", "slug"),
        ({"type": "p" * 65, "id": "x"}, "speedups", "resource.type", "slug"),
        ({"type": "pipeline", "id": ""}, "speedups", "resource.id", "length"),
        ({"type": "pipeline", "id": "x" * 257}, "speedups", "resource.id", "length"),
        ({"type": "pipeline", "id": "line\nbreak"}, "speedups", "resource.id", "printable"),
        ({"type": "pipeline", "id": "nul\x00"}, "speedups", "resource.id", "printable"),
        ({"type": "pipeline", "id": "x"}, "Speed Ups", "feature", "slug"),
        ({"type": "pipeline", "id": "x"}, "-leading-dash", "feature", "slug"),
    ],
)
async def test_invalid_mutation_input_is_an_invalid_input_result(
    server: Server, resource: dict[str, str], feature: str, field: str, rule: str
) -> None:
    for mutation, name in ((ADD, "addFeature"), (REMOVE, "removeFeature")):
        response = await server.gql(mutation, {"r": resource, "f": feature})
        assert response.status == 200
        assert response.errors == []
        result = response.data[name]
        assert result["__typename"] == "InvalidInput"
        assert (result["field"], result["rule"]) == (field, rule)
        assert field in result["message"]
    assert server.events() == [], "invalid input must never reach the store"


async def test_invalid_query_input_is_bad_user_input(server: Server) -> None:
    response = await server.gql(HAS, {"r": {"type": "pipeline", "id": "x"}, "f": "NOPE"})
    assert response.status == 200
    assert response.data == {"hasFeature": None}  # nullable: the error stays in its field
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == "feature"
    assert "lowercase slug" in response.errors[0]["message"]

    response = await server.gql('{ resource(type: "x", id: "") { features } }')
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == "resource.id"


async def test_unicode_and_odd_ids_round_trip_over_http(server: Server) -> None:
    resource = {"type": "repo", "id": 'org/name with space/日本語 🚀 "quoted"'}
    added = await server.gql(ADD, {"r": resource, "f": "beta"})
    assert added.data["addFeature"]["resource"] == {**resource, "features": ["beta"]}
    assert await has(server, resource, "beta") is True


async def test_change_log_query(server: Server) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    await server.gql(REMOVE, {"r": PIPELINE, "f": "speedups"})
    response = await server.gql(
        "{ revision changes(after: 0) { revision op feature actor at resource { id } } }"
    )
    assert response.data["revision"] == 2
    changes = response.data["changes"]
    # No token on loopback: the actor is "anonymous" (tests/test_trust.py has tokens).
    assert [(c["revision"], c["op"], c["actor"]) for c in changes] == [
        (1, "ADD", "anonymous"),
        (2, "REMOVE", "anonymous"),
    ]
    later = await server.gql("{ changes(after: 1, first: 5) { revision } }")
    assert later.data["changes"] == [{"revision": 2}]


async def test_syntax_error_status_depends_on_media_type(server: Server) -> None:
    legacy = await server.gql("{ hasFeature(")
    assert legacy.status == 200
    assert legacy.content_type == "application/json"
    assert legacy.codes == ["GRAPHQL_PARSE_FAILED"]
    assert "data" not in legacy.body

    modern = await server.gql(
        "{ hasFeature(", headers={"Accept": "application/graphql-response+json"}
    )
    assert modern.status == 400
    assert modern.content_type == "application/graphql-response+json"
    assert modern.codes == ["GRAPHQL_PARSE_FAILED"]


async def test_validation_error_is_400_for_graphql_response_json(server: Server) -> None:
    response = await server.gql(
        "{ nope }", headers={"Accept": "application/graphql-response+json, application/json;q=0.9"}
    )
    assert response.status == 400
    assert response.codes == ["GRAPHQL_VALIDATION_FAILED"]


async def test_field_errors_are_200_for_graphql_response_json(server: Server) -> None:
    response = await server.gql(
        HAS,
        {"r": PIPELINE, "f": "BAD"},
        headers={"Accept": "application/graphql-response+json"},
    )
    assert response.status == 200
    assert response.content_type == "application/graphql-response+json"
    assert "data" in response.body
    assert response.codes == ["BAD_USER_INPUT"]


async def test_get_queries_work_and_get_mutations_do_not(server: Server) -> None:
    query = '{ hasFeature(resource: {type: "a", id: "b"}, feature: "c") }'
    async with server.session.get(f"{server.url}/graphql", params={"query": query}) as response:
        assert response.status == 200
        assert (await response.json()) == {"data": {"hasFeature": False}}
    mutation = (
        'mutation { addFeature(resource: {type: "a", id: "b"}, feature: "c") { __typename } }'
    )
    async with server.session.get(f"{server.url}/graphql", params={"query": mutation}) as response:
        assert response.status in (400, 405)
        assert "errors" in await response.json(content_type=None)
    assert await has(server, {"type": "a", "id": "b"}, "c") is False


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"query": 42}',
        b"",
        b'{"variables": {}}',
        "\udcff".encode(errors="surrogateescape"),
    ],
)
async def test_malformed_requests_are_4xx_json_not_500(server: Server, body: bytes) -> None:
    async with server.session.post(
        f"{server.url}/graphql", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert 400 <= response.status < 500
        payload = await response.json(content_type=None)
        assert payload["errors"][0]["message"]
        assert "Traceback" not in await response.text()


async def test_unsupported_media_types_are_415(server: Server) -> None:
    async with server.session.post(
        f"{server.url}/graphql", data=b"{ revision }", headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 415
        payload = await response.json(content_type=None)
        assert payload["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_other_methods_are_405(server: Server) -> None:
    async with server.session.put(f"{server.url}/graphql", data=b"{}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST"


async def test_graphiql_is_served_to_browsers(server: Server) -> None:
    async with server.session.get(
        f"{server.url}/graphql", headers={"Accept": "text/html"}
    ) as response:
        assert response.status == 200
        assert "graphiql" in (await response.text()).lower()


async def test_healthz_and_request_ids(server: Server) -> None:
    async with server.session.get(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
        first = response.headers["X-Request-ID"]
    async with server.session.get(f"{server.url}/healthz") as response:
        second = response.headers["X-Request-ID"]
    assert len(first) == len(second) == 20
    assert first != second
    assert first[:12] == second[:12], "one random prefix per process, then a counter"
    response = await server.gql(
        HAS, {"r": PIPELINE, "f": "x"}, headers={"X-Request-ID": "trace-123"}
    )
    assert response.headers["X-Request-ID"] == "trace-123"
    assert server.events()[-1].request_id == "trace-123"


async def test_introspection_is_on_by_default_and_can_be_switched_off(
    start_server: StartServer,
) -> None:
    query = "{ __schema { queryType { name } } }"
    on = await start_server("memory")
    assert (await on.gql(query)).data == {"__schema": {"queryType": {"name": "Query"}}}
    off = await start_server("memory", introspection=False)
    response = await off.gql(query)
    assert response.data is None
    assert response.errors


# -- store failures ---------------------------------------------------------------------


async def test_store_down_is_store_unavailable_without_internals(
    start_server: StartServer,
) -> None:
    server = await start_server("down", extra_plugins=[BrokenStoresPlugin()])
    response = await server.gql(HAS, {"r": PIPELINE, "f": "speedups"})
    assert response.status == 200
    assert response.codes == ["STORE_UNAVAILABLE"]
    assert "10.0.0.7" not in response.errors[0]["message"]
    assert response.errors[0]["extensions"]["requestId"] == response.headers["X-Request-ID"]
    (event,) = server.events()
    assert (event.op, event.outcome) == ("has", "unavailable")
    # Writes still work on this store: one broken operation does not poison the rest.
    added = await server.gql(
        'mutation { addFeature(resource: {type: "a", id: "b"}, feature: "c") '
        "{ ... on FeatureChange { changed } } }"
    )
    assert added.data["addFeature"]["changed"] is True


async def test_stalled_store_times_out_at_the_deadline(start_server: StartServer) -> None:
    server = await start_server("stalled", extra_plugins=[BrokenStoresPlugin()], deadline=0.2)
    response = await server.gql(HAS, {"r": PIPELINE, "f": "speedups"})
    assert response.status == 200
    assert response.codes == ["STORE_TIMEOUT"]
    (event,) = server.events()
    assert event.outcome == "timeout"
    async with server.session.get(f"{server.url}/healthz") as health:
        assert health.status == 200


async def test_unexpected_store_error_is_masked_with_a_request_id(
    start_server: StartServer,
) -> None:
    server = await start_server("buggy", extra_plugins=[BrokenStoresPlugin()])
    response = await server.gql(HAS, {"r": PIPELINE, "f": "speedups"})
    assert response.status == 200
    assert response.codes == ["INTERNAL_SERVER_ERROR"]
    message = response.errors[0]["message"]
    assert "secret-internal-state" not in message
    assert "KeyError" not in message
    assert response.headers["X-Request-ID"] in message


async def test_sqlite_store_over_http(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(f"sqlite://{tmp_path}/f.db")
    added = await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    assert added.data["addFeature"]["changed"] is True
    assert await has(server, PIPELINE, "speedups") is True
    assert (tmp_path / "f.db").exists()
