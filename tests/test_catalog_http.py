"""End to end over HTTP: the catalog, listings, history, bulk changes, strict mode, nodeId.

Most tests run on the memory store; ``test_the_catalog_works_on_every_store`` runs one
scenario through each bundled store (the store contract suite covers the stores
themselves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from features_gql.graphql.admission import Limits
from tests.conftest import Server, StartServer, bearer, make_tokens

DEFINE = """mutation ($input: FeatureDefinitionInput!) {
  defineFeature(input: $input) {
    __typename
    ... on FeatureDefinitionChange {
      changed revision
      feature { name defined description owner kind expiresAt expired archived archivedAt
                createdAt updatedAt resourceCount }
    }
    ... on InvalidInput { field rule message }
  }
}"""
ARCHIVE = """mutation ($name: String!) {
  archiveFeature(name: $name) {
    __typename
    ... on FeatureDefinitionChange { changed revision feature { name archived archivedAt } }
    ... on InvalidInput { field rule message }
  }
}"""
BULK = """mutation ($items: [CheckInput!]!) {
  addFeatures(items: $items) {
    __typename
    ... on BulkChange {
      changedCount revision changes { resource { type id } feature changed revision }
    }
    ... on InvalidInput { field rule message }
  }
}"""
REMOVE_BULK = BULK.replace("addFeatures", "removeFeatures")
SET = """mutation ($r: ResourceInput!, $f: [String!]!) {
  setFeatures(resource: $r, features: $f) {
    __typename
    ... on FeaturesSet { resource { type id } features added removed revision }
    ... on InvalidInput { field rule message }
  }
}"""
ADD = """mutation ($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) {
    __typename
    ... on FeatureChange { changed revision }
    ... on InvalidInput { field rule message }
  }
}"""
FEATURES = """query ($kind: FeatureKind, $search: String, $expired: Boolean, $archived: Boolean,
           $defined: Boolean, $first: Int, $after: String) {
  features(kind: $kind, search: $search, expired: $expired, archived: $archived,
           defined: $defined, first: $first, after: $after) {
    edges { cursor node { name defined kind resourceCount expired archived } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
HISTORY = """query ($r: ResourceInput, $f: String, $a: String, $first: Int, $after: String) {
  history(resource: $r, feature: $f, actor: $a, first: $first, after: $after) {
    totalCount
    edges { cursor node { revision op feature actor resource { type id } } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def item(type_: str, id_: str, feature: str) -> dict[str, Any]:
    return {"resource": {"type": type_, "id": id_}, "feature": feature}


async def ok(server: Server, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
    response = await server.gql(query, variables, **kw)
    assert response.status == 200, response.body
    assert response.errors == [], response.errors
    return response.data


async def define(server: Server, **fields: Any) -> dict[str, Any]:
    data = await ok(server, DEFINE, {"input": fields})
    result: dict[str, Any] = data["defineFeature"]
    return result


async def all_names(server: Server, **filters: Any) -> list[str]:
    data = await ok(server, FEATURES, {"first": 100, **filters})
    return [edge["node"]["name"] for edge in data["features"]["edges"]]


# -- the catalog -------------------------------------------------------------------------


async def test_define_creates_updates_and_keeps_fields(server: Server) -> None:
    created = await define(
        server,
        name="new-checkout",
        description="The new checkout flow.\nRolled out by region.",
        owner="team-payments",
        kind="RELEASE",
        expiresAt="2030-01-31T00:00:00Z",
    )
    assert created["__typename"] == "FeatureDefinitionChange"
    assert (created["changed"], created["revision"]) == (True, 1)
    feature = created["feature"]
    assert feature["defined"] is True
    assert feature["kind"] == "RELEASE"
    assert feature["owner"] == "team-payments"
    assert feature["expiresAt"].startswith("2030-01-31T00:00:00")
    assert (feature["expired"], feature["archived"], feature["resourceCount"]) == (False, False, 0)
    assert feature["createdAt"] == feature["updatedAt"]

    same = await define(server, name="new-checkout", owner="team-payments")
    assert (same["changed"], same["revision"]) == (False, 1)

    # Left out: kept. Given as null: cleared.
    updated = await define(server, name="new-checkout", description=None, kind="EXPERIMENT")
    assert (updated["changed"], updated["revision"]) == (True, 2)
    feature = updated["feature"]
    assert (feature["description"], feature["owner"], feature["kind"]) == (
        None,
        "team-payments",
        "EXPERIMENT",
    )
    assert feature["createdAt"] == created["feature"]["createdAt"]

    past = await define(server, name="old-banner", expiresAt="2001-01-01T12:00:00+02:00")
    assert past["feature"]["expired"] is True
    assert past["feature"]["expiresAt"].startswith("2001-01-01T10:00:00")

    log = await ok(server, "{ changes { revision op feature actor resource { id } } }")
    assert log["changes"] == [
        {"revision": r, "op": "DEFINE", "feature": f, "actor": "anonymous", "resource": None}
        for r, f in ((1, "new-checkout"), (2, "new-checkout"), (3, "old-banner"))
    ]


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"name": "Bad Name"}, "input.name", "slug"),
        ({"name": "ok", "description": "x" * 2001}, "input.description", "length"),
        ({"name": "ok", "description": "bell\a"}, "input.description", "printable"),
        ({"name": "ok", "owner": "two\nlines"}, "input.owner", "printable"),
        ({"name": "ok", "owner": "o" * 201}, "input.owner", "length"),
        ({"name": "ok", "expiresAt": "2030-01-01T00:00:00"}, "input.expiresAt", "timezone"),
    ],
)
async def test_define_refuses_bad_input(
    server: Server, fields: dict[str, Any], field: str, rule: str
) -> None:
    result = await define(server, **fields)
    assert result["__typename"] == "InvalidInput"
    assert (result["field"], result["rule"]) == (field, rule)
    assert server.events() == [], "invalid input never reaches the store"


async def test_define_refuses_an_unknown_kind_before_anything_runs(server: Server) -> None:
    response = await server.gql(DEFINE, {"input": {"name": "ok", "kind": "FOREVER"}})
    assert response.codes == ["GRAPHQL_VALIDATION_FAILED"]  # variables are coerced first
    assert "FOREVER" in response.errors[0]["message"]
    assert response.data is None


async def test_archive_retires_and_define_restores(server: Server) -> None:
    await define(server, name="legacy-ui", owner="web")
    await ok(server, ADD, {"r": {"type": "user", "id": "u1"}, "f": "legacy-ui"})
    archived = (await ok(server, ARCHIVE, {"name": "legacy-ui"}))["archiveFeature"]
    assert archived["changed"] is True
    assert archived["feature"]["archived"] is True
    assert archived["feature"]["archivedAt"] is not None
    again = (await ok(server, ARCHIVE, {"name": "legacy-ui"}))["archiveFeature"]
    assert (again["changed"], again["revision"]) == (False, archived["revision"])
    never = (await ok(server, ARCHIVE, {"name": "never-defined"}))["archiveFeature"]
    assert never["changed"] is False
    bad = (await ok(server, ARCHIVE, {"name": "NO"}))["archiveFeature"]
    assert (bad["__typename"], bad["field"], bad["rule"]) == ("InvalidInput", "name", "slug")
    # Archived: out of the default listing, kept with its assignment, back when defined.
    assert "legacy-ui" not in await all_names(server)
    assert await all_names(server, archived=True) == ["legacy-ui"]
    assert "legacy-ui" in await all_names(server, archived=None)
    check = '{ hasFeature(resource: {type: "user", id: "u1"}, feature: "legacy-ui") }'
    assert (await ok(server, check))["hasFeature"] is True
    restored = await define(server, name="legacy-ui")
    assert restored["changed"] is True
    assert restored["feature"]["archived"] is False
    assert restored["feature"]["owner"] == "web"
    log = await ok(server, "{ changes { op } }")
    assert [c["op"] for c in log["changes"]] == ["DEFINE", "ADD", "ARCHIVE", "DEFINE"]


async def test_feature_fields_for_an_assigned_but_undefined_feature(server: Server) -> None:
    for id_ in ("a", "b"):
        await ok(server, ADD, {"r": {"type": "repo", "id": id_}, "f": "dark-mode"})
    data = await ok(
        server,
        """{ feature(name: "dark-mode") { name defined description kind expired archived
             createdAt resourceCount
             resources(first: 1) { totalCount edges { node { id } } } } }""",
    )
    assert data["feature"] == {
        "name": "dark-mode",
        "defined": False,
        "description": None,
        "kind": None,
        "expired": False,
        "archived": False,
        "createdAt": None,
        "resourceCount": 2,
        "resources": {"totalCount": 2, "edges": [{"node": {"id": "a"}}]},
    }


async def test_a_failed_catalog_read_nulls_only_its_feature(start_server: StartServer) -> None:
    server = await start_server(
        {"plugin": "failing", "every_nth": 1, "operations": ["feature_infos"], "inner": "memory"}
    )
    response = await server.gql(
        '{ hasFeature(resource: {type: "a", id: "b"}, feature: "x") '
        'feature(name: "x") { name resourceCount } plain: feature(name: "y") { name } }'
    )
    assert response.data == {"hasFeature": False, "feature": None, "plain": {"name": "y"}}
    assert response.codes == ["STORE_UNAVAILABLE"]
    assert response.errors[0]["path"] == ["feature", "resourceCount"]


async def test_features_lists_the_catalog_with_filters_and_pages(server: Server) -> None:
    await define(server, name="kill-switch", kind="OPS", description="Stops the Importer")
    await define(server, name="old-flag", kind="RELEASE", expiresAt="2001-01-01T00:00:00Z")
    await define(server, name="new-flag", kind="RELEASE", expiresAt="2099-01-01T00:00:00Z")
    await ok(server, ADD, {"r": {"type": "repo", "id": "r"}, "f": "assigned-only"})
    await ok(server, ADD, {"r": {"type": "repo", "id": "r"}, "f": "new-flag"})

    everything = ["assigned-only", "kill-switch", "new-flag", "old-flag"]
    assert await all_names(server) == everything
    assert await all_names(server, kind="RELEASE") == ["new-flag", "old-flag"]
    assert await all_names(server, expired=True) == ["old-flag"]
    assert await all_names(server, expired=False) == ["assigned-only", "kill-switch", "new-flag"]
    assert await all_names(server, defined=False) == ["assigned-only"]
    assert await all_names(server, search="IMPORTER") == ["kill-switch"]
    assert await all_names(server, search="flag") == ["new-flag", "old-flag"]

    pages: list[str] = []
    after = None
    while True:
        data = await ok(server, FEATURES, {"first": 3, "after": after})
        connection = data["features"]
        pages += [edge["node"]["name"] for edge in connection["edges"]]
        assert connection["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
        assert after == connection["edges"][-1]["cursor"]
    assert pages == everything

    nodes = {
        e["node"]["name"]: e["node"] for e in (await ok(server, FEATURES))["features"]["edges"]
    }
    assert nodes["new-flag"] == {
        "name": "new-flag",
        "defined": True,
        "kind": "RELEASE",
        "resourceCount": 1,
        "expired": False,
        "archived": False,
    }


async def test_first_zero_says_whether_there_is_a_page(server: Server) -> None:
    empty = await ok(server, FEATURES, {"first": 0})
    assert empty["features"]["pageInfo"]["hasNextPage"] is False
    await ok(server, ADD, {"r": {"type": "repo", "id": "r"}, "f": "x"})
    zero = await ok(server, FEATURES, {"first": 0})
    assert zero["features"]["edges"] == []
    assert zero["features"]["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }
    data = await ok(
        server,
        """{ resources(type: "repo", first: 0) { totalCount pageInfo { hasNextPage } }
             feature(name: "x") { resources(first: 0) { pageInfo { hasNextPage } } }
             history(first: 0) { totalCount pageInfo { hasNextPage } } }""",
    )
    assert data == {
        "resources": {"totalCount": 1, "pageInfo": {"hasNextPage": True}},
        "feature": {"resources": {"pageInfo": {"hasNextPage": True}}},
        "history": {"totalCount": 1, "pageInfo": {"hasNextPage": True}},
    }


@pytest.mark.parametrize(
    ("query", "field", "rule"),
    [
        ("{ features(first: 1001) { edges { cursor } } }", "first", "range"),
        ("{ features(first: -1) { edges { cursor } } }", "first", "range"),
        ('{ features(after: "nope") { edges { cursor } } }', "after", "cursor"),
        ('{ features(search: "a\\u0000") { edges { cursor } } }', "search", "printable"),
        ('{ resources(type: "Repo") { edges { cursor } } }', "type", "slug"),
        ('{ resources(type: "repo", after: "x") { edges { cursor } } }', "after", "cursor"),
        ('{ resourceTypes(after: "Bad!") { name } }', "after", "slug"),
        ('{ history(feature: "A B") { edges { cursor } } }', "feature", "slug"),
        (
            '{ history(resource: {type: "t", id: ""}) { edges { cursor } } }',
            "resource.id",
            "length",
        ),
        ('{ history(actor: "tab\\there") { edges { cursor } } }', "actor", "printable"),
        ('{ history(after: "eyJmZWF0dXJlIjoieCJ9") { edges { cursor } } }', "after", "cursor"),
        ('{ node(nodeId: "garbage") { nodeId } }', "nodeId", "node-id"),
    ],
)
async def test_listing_arguments_are_checked(
    server: Server, query: str, field: str, rule: str
) -> None:
    response = await server.gql(query)
    assert response.status == 200
    assert response.codes == ["BAD_USER_INPUT"], response.body
    assert (
        response.errors[0]["extensions"]["field"],
        response.errors[0]["extensions"]["rule"],
    ) == (
        field,
        rule,
    )
    assert next(iter(response.data.values())) is None


# -- listings ----------------------------------------------------------------------------


async def test_resource_types_and_resources_of_a_type(server: Server) -> None:
    ids = ["b", "a", "Z", "é", "with/slash"]
    await ok(server, BULK, {"items": [item("repo", i, "f") for i in ids]})
    await ok(server, BULK, {"items": [item("repo", "a", "g"), item("pipeline", "p1", "f")]})
    data = await ok(server, "{ resourceTypes { name resourceCount } }")
    assert data["resourceTypes"] == [
        {"name": "pipeline", "resourceCount": 1},
        {"name": "repo", "resourceCount": 5},
    ]
    assert (await ok(server, '{ resourceTypes(first: 1, after: "pipeline") { name } }')) == {
        "resourceTypes": [{"name": "repo"}]
    }
    seen: list[str] = []
    after = None
    query = """query ($after: String) { resources(type: "repo", first: 2, after: $after) {
        totalCount edges { node { type id features } } pageInfo { hasNextPage endCursor } } }"""
    while True:
        connection = (await ok(server, query, {"after": after}))["resources"]
        assert connection["totalCount"] == 5
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == sorted(ids)  # code point order: "Z" < "a" < "b" < "with/slash" < "é"
    nested = await ok(
        server, "{ resourceTypes { name resources(first: 1) { edges { node { id features } } } } }"
    )
    assert nested["resourceTypes"][1]["resources"]["edges"] == [
        {"node": {"id": "Z", "features": ["f"]}}
    ]
    # A cursor of one type's listing is refused by another's.
    other = await server.gql(
        'query ($a: String) { resources(type: "pipeline", after: $a) { totalCount } }', {"a": after}
    )
    assert other.codes == ["BAD_USER_INPUT"]


# -- history -----------------------------------------------------------------------------


async def test_history_filters_pages_and_nests(start_server: StartServer) -> None:
    tables, secrets = make_tokens(alice="read,write", bob="read,write")
    server = await start_server("memory", auth_tokens=tables)
    alice, bob = bearer(secrets["alice"]), bearer(secrets["bob"])
    repo = {"type": "repo", "id": "r1"}
    await ok(server, ADD, {"r": repo, "f": "beta"}, headers=alice)  # 1
    await ok(server, ADD, {"r": {"type": "repo", "id": "r2"}, "f": "beta"}, headers=bob)  # 2
    await ok(server, DEFINE, {"input": {"name": "beta"}}, headers=bob)  # 3
    await ok(server, SET, {"r": repo, "f": ["gamma"]}, headers=alice)  # 4 remove beta, 5 add gamma

    async def revisions(headers: dict[str, str] = alice, **variables: Any) -> list[int]:
        data = await ok(server, HISTORY, variables, headers=headers)
        return [edge["node"]["revision"] for edge in data["history"]["edges"]]

    assert await revisions() == [5, 4, 3, 2, 1]
    assert await revisions(r=repo) == [5, 4, 1]
    assert await revisions(f="beta") == [4, 3, 2, 1]
    assert await revisions(a="bob") == [3, 2]
    assert await revisions(r=repo, f="beta", a="alice") == [4, 1]

    first = (await ok(server, HISTORY, {"first": 2}, headers=alice))["history"]
    assert first["totalCount"] == 5
    assert first["pageInfo"]["hasNextPage"] is True
    rest = await ok(
        server, HISTORY, {"first": 10, "after": first["pageInfo"]["endCursor"]}, headers=alice
    )
    assert [e["node"]["revision"] for e in rest["history"]["edges"]] == [3, 2, 1]
    assert rest["history"]["pageInfo"]["hasNextPage"] is False
    filtered = await ok(server, HISTORY, {"f": "beta"}, headers=alice)
    assert filtered["history"]["totalCount"] is None
    define_event = filtered["history"]["edges"][1]["node"]
    assert define_event == {
        "revision": 3,
        "op": "DEFINE",
        "feature": "beta",
        "actor": "bob",
        "resource": None,
    }

    nested = await ok(
        server,
        """{ resource(type: "repo", id: "r1") {
               history(first: 2) { edges { node { op feature } } } }
             feature(name: "beta") { history(actor: "bob") { edges { node { revision } } } } }""",
        headers=bob,
    )
    assert nested["resource"]["history"]["edges"] == [
        {"node": {"op": "ADD", "feature": "gamma"}},
        {"node": {"op": "REMOVE", "feature": "beta"}},
    ]
    assert nested["feature"]["history"]["edges"] == [
        {"node": {"revision": 3}},
        {"node": {"revision": 2}},
    ]


# -- bulk changes ------------------------------------------------------------------------


async def test_add_and_remove_features_answer_per_item(server: Server) -> None:
    await ok(server, ADD, {"r": {"type": "repo", "id": "a"}, "f": "x"})  # 1
    items = [
        item("repo", "a", "x"),
        item("repo", "a", "y"),
        item("repo", "b", "x"),
        item("repo", "a", "y"),
    ]
    result = (await ok(server, BULK, {"items": items}))["addFeatures"]
    assert result["__typename"] == "BulkChange"
    assert (result["changedCount"], result["revision"]) == (2, 3)
    assert [(c["feature"], c["changed"], c["revision"]) for c in result["changes"]] == [
        ("x", False, 3),
        ("y", True, 2),
        ("x", True, 3),
        ("y", False, 3),
    ]
    assert result["changes"][2]["resource"] == {"type": "repo", "id": "b"}

    removed = (await ok(server, REMOVE_BULK, {"items": items[:3]}))["removeFeatures"]
    assert [(c["changed"], c["revision"]) for c in removed["changes"]] == [
        (True, 4),
        (True, 5),
        (True, 6),
    ]
    log = await ok(server, "{ changes(after: 1) { revision op feature resource { id } } }")
    assert [(c["revision"], c["op"], c["resource"]["id"]) for c in log["changes"]] == [
        (2, "ADD", "a"),
        (3, "ADD", "b"),
        (4, "REMOVE", "a"),
        (5, "REMOVE", "a"),
        (6, "REMOVE", "b"),
    ]
    empty = (await ok(server, BULK, {"items": []}))["addFeatures"]
    assert (empty["changes"], empty["changedCount"], empty["revision"]) == ([], 0, 6)


async def test_a_bad_item_refuses_the_whole_bulk_change(server: Server) -> None:
    items = [item("repo", "a", "x"), item("repo", "a", "Not A Slug"), item("repo", "", "x")]
    result = (await ok(server, BULK, {"items": items}))["addFeatures"]
    assert (result["__typename"], result["field"], result["rule"]) == (
        "InvalidInput",
        "items[1].feature",
        "slug",
    )
    assert (await ok(server, "{ revision }"))["revision"] == 0
    too_many = [item("repo", f"r{i}", "x") for i in range(10_001)]
    light = (
        "mutation ($items: [CheckInput!]!) "
        "{ addFeatures(items: $items) { ... on InvalidInput { field rule } } }"
    )
    refused = (await ok(server, light, {"items": too_many}))["addFeatures"]
    assert (refused["field"], refused["rule"]) == ("items", "batch-size")
    assert [event.op for event in server.events()] == ["revision"], "only the revision query"


async def test_bulk_changes_count_against_the_cost_limit(start_server: StartServer) -> None:
    # Each item costs one, and the list of changes one more (each change's resource is
    # built from its item, so costs nothing): 19 items cost 20, the limit.
    server = await start_server("memory", limits=Limits(max_cost=20))
    fits = await server.gql(BULK, {"items": [item("t", str(i), "f") for i in range(19)]})
    assert fits.errors == []
    over = await server.gql(BULK, {"items": [item("t", str(i), "f") for i in range(20)]})
    assert over.codes == ["QUERY_TOO_COMPLEX"]
    assert over.errors[0]["extensions"]["cost"] == 21
    # setFeatures: its features, and one for each of the three lists of its answer.
    big_set = await server.gql(
        SET, {"r": {"type": "t", "id": "1"}, "f": [f"f{i}" for i in range(18)]}
    )
    assert big_set.codes == ["QUERY_TOO_COMPLEX"]
    assert big_set.errors[0]["extensions"]["cost"] == 21
    assert (await server.gql("{ revision }")).data == {"revision": 19}


async def test_bulk_changes_need_the_write_scope(start_server: StartServer) -> None:
    tables, secrets = make_tokens(reader="read")
    server = await start_server("memory", auth_tokens=tables)
    for query, variables in (
        (BULK, {"items": [item("t", "1", "f")]}),
        (SET, {"r": {"type": "t", "id": "1"}, "f": ["f"]}),
        (DEFINE, {"input": {"name": "f"}}),
        (ARCHIVE, {"name": "f"}),
    ):
        response = await server.gql(query, variables, headers=bearer(secrets["reader"]))
        assert response.codes == ["FORBIDDEN"]
    assert server.events() == []


async def test_set_features_replaces_a_resources_features(server: Server) -> None:
    repo = {"type": "repo", "id": "r"}
    await ok(server, BULK, {"items": [item("repo", "r", "a"), item("repo", "r", "b")]})
    result = (await ok(server, SET, {"r": repo, "f": ["c", "b", "c"]}))["setFeatures"]
    assert result == {
        "__typename": "FeaturesSet",
        "resource": repo,
        "features": ["b", "c"],
        "added": ["c"],
        "removed": ["a"],
        "revision": 4,
    }
    cleared = (await ok(server, SET, {"r": repo, "f": []}))["setFeatures"]
    assert (cleared["removed"], cleared["features"]) == (["b", "c"], [])
    data = await ok(
        server, '{ resource(type: "repo", id: "r") { features } resourceTypes { name } }'
    )
    assert data == {"resource": {"features": []}, "resourceTypes": []}
    bad = (await ok(server, SET, {"r": repo, "f": ["ok", "BAD"]}))["setFeatures"]
    assert (bad["field"], bad["rule"]) == ("features[1]", "slug")


# -- strict mode -------------------------------------------------------------------------


async def test_strict_mode_assigns_only_defined_features(start_server: StartServer) -> None:
    server = await start_server("memory", catalog_strict=True)
    repo = {"type": "repo", "id": "r"}
    refused = (await ok(server, ADD, {"r": repo, "f": "unknown"}))["addFeature"]
    assert (refused["__typename"], refused["field"], refused["rule"]) == (
        "InvalidInput",
        "feature",
        "undefined",
    )
    assert "defineFeature" in refused["message"]
    await define(server, name="known")
    await define(server, name="retired")
    await ok(server, ARCHIVE, {"name": "retired"})
    added = (await ok(server, ADD, {"r": repo, "f": "known"}))["addFeature"]
    assert (added["changed"], added["revision"]) == (True, 4)

    bulk = await ok(
        server, BULK, {"items": [item("repo", "x", "known"), item("repo", "x", "retired")]}
    )
    assert (bulk["addFeatures"]["field"], bulk["addFeatures"]["rule"]) == (
        "items[1].feature",
        "undefined",
    )
    set_ = (await ok(server, SET, {"r": repo, "f": ["known", "nope"]}))["setFeatures"]
    assert (set_["field"], set_["rule"]) == ("features[1]", "undefined")
    assert (await ok(server, "{ revision }"))["revision"] == 4, "a refusal applies nothing"
    # Removing is always allowed, whatever the catalog says.
    removed = await ok(
        server,
        'mutation { removeFeature(resource: {type: "repo", id: "r"}, feature: "known") '
        "{ ... on FeatureChange { changed } } }",
    )
    assert removed["removeFeature"] == {"changed": True}


async def test_strict_mode_is_off_by_default_and_read_from_toml(tmp_path: Path) -> None:
    from features_gql.config import load_settings

    assert load_settings(env={}).catalog_strict is False
    config = tmp_path / "f.toml"
    config.write_text("[catalog]\nstrict = true\n")
    assert load_settings(config_file=config, env={}).catalog_strict is True
    assert load_settings(env={"FEATURES_GQL_CATALOG_STRICT": "true"}).catalog_strict is True


# -- identity for client caches ----------------------------------------------------------


async def test_node_ids_tell_same_ids_of_different_types_apart(server: Server) -> None:
    await ok(server, BULK, {"items": [item("repo", "same", "a"), item("pipeline", "same", "b")]})
    data = await ok(
        server,
        """{ repo: resource(type: "repo", id: "same") { nodeId id }
             pipeline: resource(type: "pipeline", id: "same") { nodeId id }
             feature(name: "a") { nodeId } }""",
    )
    assert data["repo"]["id"] == data["pipeline"]["id"] == "same"
    ids = {data["repo"]["nodeId"], data["pipeline"]["nodeId"], data["feature"]["nodeId"]}
    assert len(ids) == 3
    query = """query ($id: ID!) { node(nodeId: $id) { __typename nodeId
        ... on Resource { type id features } ... on Feature { name resourceCount } } }"""
    back = await ok(server, query, {"id": data["pipeline"]["nodeId"]})
    assert back["node"] == {
        "__typename": "Resource",
        "nodeId": data["pipeline"]["nodeId"],
        "type": "pipeline",
        "id": "same",
        "features": ["b"],
    }
    feature = await ok(server, query, {"id": data["feature"]["nodeId"]})
    assert feature["node"]["name"] == "a"
    assert feature["node"]["resourceCount"] == 1


# -- every store -------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "mongodb", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind = request.param
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/features.db"
    if kind == "mongodb":
        url = request.getfixturevalue("mongodb_url")
        return {
            "plugin": "mongodb",
            "url": url,
            "database": request.getfixturevalue("mongodb_database"),
        }
    url = request.getfixturevalue("postgres_url")
    return {"plugin": "postgres", "url": url, "schema": request.getfixturevalue("postgres_schema")}


async def test_the_catalog_works_on_every_store(any_store: Any, start_server: StartServer) -> None:
    # The store first: its schema is dropped after the server has stopped.
    server = await start_server(any_store, catalog_strict=True)
    await define(server, name="speedups", kind="OPS", owner="ci")
    bulk = (
        await ok(server, BULK, {"items": [item("pipeline", f"p{i}", "speedups") for i in range(3)]})
    )["addFeatures"]
    assert [c["revision"] for c in bulk["changes"]] == [2, 3, 4]
    refused = await ok(server, ADD, {"r": {"type": "pipeline", "id": "p9"}, "f": "other"})
    assert refused["addFeature"]["rule"] == "undefined"
    await ok(server, SET, {"r": {"type": "pipeline", "id": "p0"}, "f": []})  # 5
    data = await ok(
        server,
        """{ features { edges { node { name kind owner resourceCount } } }
             resourceTypes { name resourceCount }
             resources(type: "pipeline", first: 1) { totalCount edges { node { id } } }
             history(feature: "speedups", first: 2) { edges { node { revision op } } } }""",
    )
    assert data == {
        "features": {
            "edges": [
                {"node": {"name": "speedups", "kind": "OPS", "owner": "ci", "resourceCount": 2}}
            ]
        },
        "resourceTypes": [{"name": "pipeline", "resourceCount": 2}],
        "resources": {"totalCount": 2, "edges": [{"node": {"id": "p1"}}]},
        "history": {
            "edges": [
                {"node": {"revision": 5, "op": "REMOVE"}},
                {"node": {"revision": 4, "op": "ADD"}},
            ]
        },
    }
    archived = (await ok(server, ARCHIVE, {"name": "speedups"}))["archiveFeature"]
    assert (archived["changed"], archived["revision"]) == (True, 6)


async def test_listing_costs_follow_their_page_sizes(start_server: StartServer) -> None:
    server = await start_server("memory", limits=Limits(max_cost=5_000))
    # 1000 types by default, each with a page of 100 resources: far over the limit.
    nested = await server.gql("{ resourceTypes { name resources { edges { cursor } } } }")
    assert nested.codes == ["QUERY_TOO_COMPLEX"]
    small = await server.gql(
        "{ resourceTypes(first: 10) { name resources(first: 10) { edges { cursor } } } }"
    )
    assert small.errors == []
