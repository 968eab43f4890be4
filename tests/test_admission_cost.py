"""What a request costs: the gate charges the sizes execution will use, once per item.

Three ways a request used to be charged less than it runs, each checked at the boundary
(a gate whose limit is the cost admits the request, one whose limit is one less refuses
it and names the cost) in every form a size can take (literal, variable, a variable's
default, a float given for an Int):

- a variable left out runs at its default, so is charged at its default;
- an integral float given for an Int runs as that Int (graphql-core's coercion);
- a list's selection runs once per item, so is charged once per item.

The costs expected here are written out by hand from the rules in the README (How cost is
counted); the property test compares the charge with the items execution touches.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLDefaultInput,
    GraphQLField,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
)
from graphql import build_schema as schema_of
from hypothesis import given, settings
from hypothesis import strategies as st

from features_gql.auth import AuthPolicy
from features_gql.graphql.admission import Admitted, Gate, Limits, Refused
from features_gql.graphql.schema import build_schema
from tests.conftest import StartServer

PRINCIPAL = AuthPolicy.open().anonymous_principal
#: The limit of the boundary tests that vary a size by one (small enough for its lists
#: of input objects to be written out within the token limit).
LIMIT = 400


def gate(limit: int) -> Gate:
    """The gate of a service whose cost limit is ``limit``, built as the service builds it."""
    return build_schema(limits=Limits(max_cost=limit)).gate


def charged(query: str, variables: dict[str, Any] | None = None) -> int:
    """What the gate charges for ``query`` with ``variables``: a gate that refuses anything
    that costs anything names the cost (a new one each time: nothing cached from earlier
    requests can answer for this one)."""
    decision = gate(0).admit(query, None, variables, PRINCIPAL)
    if isinstance(decision, Admitted):
        return 0
    error = decision.errors[0]
    assert error.extensions is not None
    assert error.extensions["code"] == "QUERY_TOO_COMPLEX", error.message
    cost = error.extensions["cost"]
    assert isinstance(cost, int)
    return cost


def assert_costs(query: str, variables: dict[str, Any] | None, cost: int) -> None:
    """The request is admitted under a limit of exactly ``cost``, and refused under
    ``cost - 1`` with ``cost`` in the error."""
    assert isinstance(gate(cost).admit(query, None, variables, PRINCIPAL), Admitted)
    refused = gate(cost - 1).admit(query, None, variables, PRINCIPAL)
    assert isinstance(refused, Refused)
    assert [e.extensions for e in refused.errors] == [
        {"code": "QUERY_TOO_COMPLEX", "cost": cost, "limit": cost - 1}
    ]


def refused_cost(decision: Admitted | Refused) -> int | None:
    """The cost a refusal names; None for a request admitted."""
    if isinstance(decision, Admitted):
        return None
    extensions = decision.errors[0].extensions
    assert extensions is not None
    assert extensions["code"] == "QUERY_TOO_COMPLEX"
    cost = extensions["cost"]
    assert isinstance(cost, int)
    return cost


def strings(count: int, prefix: str = "r") -> str:
    """A GraphQL list literal of ``count`` strings."""
    return "[" + ", ".join(f'"{prefix}{i}"' for i in range(count)) + "]"


ITEM = '{resource: {type: "t", id: "1"}, feature: "f"}'


def items_literal(count: int) -> str:
    return "[" + ", ".join([ITEM] * count) + "]"


def items(count: int) -> list[dict[str, Any]]:
    return [{"resource": {"type": "t", "id": str(i)}, "feature": "f"} for i in range(count)]


MATRIX = (
    'query Q($ids: [String!]!) { checkMatrix(type: "t", ids: $ids, features: ["f", "g", "h"]) }'
)
CHANGES = "query Q($n: Int) { changes(first: $n) { revision } }"


# -- 1. a variable left out is charged at its default ------------------------------------


@pytest.mark.parametrize(("size", "fits"), [(LIMIT, True), (LIMIT + 1, False)])
@pytest.mark.parametrize(
    "query",
    [
        # a list of strings
        'query Q($ids: [String!]! = {list}) { checkMatrix(type: "t", ids: $ids, features: ["f"]) }',
        # a list of input objects, for a query and for a bulk mutation
        "query Q($items: [CheckInput!]! = {items}) { checks(items: $items) { enabled } }",
        "mutation M($items: [CheckInput!]! = {items}) "
        "{ addFeatures(items: $items) { __typename } }",
        # a nullable variable, in a non-null argument: its default makes it fit
        "query Q($items: [CheckInput!] = {items}) { checks(items: $items) { feature } }",
        # a default written inside a literal list, once per item
        "query Q($item: CheckInput = " + ITEM + ") { checks(items: {item_vars}) { enabled } }",
        # a page size
        "query Q($n: Int = {size}) { changes(first: $n) { revision } }",
        "query Q($n: Int! = {size}) { resourceTypes(first: $n) { name } }",
    ],
    ids=["strings", "items", "bulk", "nullable", "in-a-list", "first", "first-non-null"],
)
def test_a_variable_left_out_is_charged_at_its_default(query: str, size: int, fits: bool) -> None:
    text = (
        query.replace("{list}", strings(size))
        .replace("{items}", items_literal(size))
        .replace("{item_vars}", "[" + " ".join(["$item"] * size) + "]")
        .replace("{size}", str(size))
    )
    decision = gate(LIMIT).admit(text, None, {}, PRINCIPAL)
    assert refused_cost(decision) == (None if fits else LIMIT + 1)


def test_the_attack_a_default_of_a_thousand_ids_by_a_thousand_features() -> None:
    thousand = strings(1000)
    query = (
        f"query Q($ids: [String!]! = {thousand}, $fs: [String!]! = {thousand}) "
        '{ checkMatrix(type: "t", ids: $ids, features: $fs) }'
    )
    assert len(query) < 20_000
    assert charged(query) == 1_000_000
    # Given, the variables are what runs, not their defaults.
    assert charged(query, {"ids": ["a"], "fs": ["f", "g"]}) == 2


def test_a_variable_given_is_charged_as_given_and_its_default_otherwise() -> None:
    # One text, so one cache entry: each request is measured with its own variables.
    query = (
        f"query Q($ids: [String!] = {strings(3)}) "
        '{ checkMatrix(type: "t", ids: $ids, features: ["f", "g"]) }'
    )
    limited = gate(LIMIT)
    for variables, cost in (
        ({}, 6),
        ({"ids": ["a"] * 501}, 1002),
        ({}, 6),
        ({"ids": ["a"] * 500}, 1000),
        ({"ids": []}, 1),  # a field with arguments costs at least one
        # null is a value given, not replaced by the default (and refused later).
        ({"ids": None}, 1),
    ):
        assert charged(query, variables) == cost
        decision = limited.admit(query, None, variables, PRINCIPAL)
        assert refused_cost(decision) == (cost if cost > LIMIT else None)


def test_a_large_default_does_not_charge_a_small_request() -> None:
    query = (
        f"query Q($ids: [String!]! = {strings(LIMIT + 1)}) "
        '{ checkMatrix(type: "t", ids: $ids, features: ["f"]) }'
    )
    limited = gate(LIMIT)
    assert refused_cost(limited.admit(query, None, {}, PRINCIPAL)) == LIMIT + 1
    assert refused_cost(limited.admit(query, None, {"ids": ["a"]}, PRINCIPAL)) is None
    assert refused_cost(limited.admit(query, None, {}, PRINCIPAL)) == LIMIT + 1


def test_a_variable_left_out_without_a_default_takes_the_arguments_default() -> None:
    # resourceTypes' first defaults to 1000; features' to null, the page of 100.
    assert charged("query Q($n: Int) { resourceTypes(first: $n) { name } }") == 1000
    assert charged("query Q($n: Int) { features(first: $n) { pageInfo { hasNextPage } } }") == 100
    page = "query Q($n: Int) { features(first: $n) { edges { cursor } } }"
    assert charged(page, {"n": None}) == 101
    assert charged("query Q($n: Int!) { changes(first: $n) { revision } }", {"n": 7}) == 7


def test_each_operation_is_charged_at_its_own_defaults() -> None:
    # Both operations spread one fragment whose size is a variable.
    query = (
        "query Small($n: Int = 2) { ...Page } query Large($n: Int = 900) { ...Page } "
        "fragment Page on Query { changes(first: $n) { resource { features } } }"
    )
    for name, size in (("Small", 2), ("Large", 900)):
        decision = gate(2 * size).admit(query, name, {}, PRINCIPAL)
        assert isinstance(decision, Admitted), name
        refused = gate(2 * size - 1).admit(query, name, {}, PRINCIPAL)
        assert isinstance(refused, Refused)
        assert refused.errors[0].extensions is not None
        assert refused.errors[0].extensions["cost"] == 2 * size


# -- 2. an integral float given for an Int runs as that Int --------------------------------


@pytest.mark.parametrize(
    ("value", "fits"),
    [(LIMIT, True), (float(LIMIT), True), (LIMIT + 1, False), (float(LIMIT + 1), False)],
    ids=["int", "float", "int+1", "float+1"],
)
def test_first_given_as_a_number_is_charged_as_graphql_coerces_it(value: float, fits: bool) -> None:
    decision = gate(LIMIT).admit(CHANGES, None, {"n": value}, PRINCIPAL)
    assert refused_cost(decision) == (None if fits else LIMIT + 1)


def test_a_large_integral_float_is_charged_in_full() -> None:
    assert charged(CHANGES, {"n": 1e6}) == 1_000_000
    assert charged(CHANGES, {"n": 2.0**31 - 1}) == 2**31 - 1
    assert charged(CHANGES, {"n": -5.0}) == 1  # refused by the API's range check
    # Nor does a page of no items (or fewer) charge its items' selection.
    per_item = "query Q($n: Int!) { changes(first: $n) { resource { features } } }"
    assert [charged(per_item, {"n": n}) for n in (-5, -5.0, 0, 1, 2.0)] == [1, 1, 1, 2, 4]


@pytest.mark.parametrize(
    "value", [1000.5, 2.0**31, 2**31, "1000", True, [1000], {"n": 1}], ids=repr
)
def test_a_value_graphql_refuses_is_charged_the_default_page(value: Any) -> None:
    # Such a request never runs (variable coercion refuses it, see the HTTP test below):
    # it is charged as if first were null.
    assert charged(CHANGES, {"n": value}) == 100


@pytest.mark.parametrize(
    ("ids", "cost"),
    [
        (["a", "b", "c"], 9),
        ([1, 2, 3, 4], 12),  # refused by coercion later; counted all the same
        ([None] * 5, 15),
        ([{"x": 1}, ["y"]], 6),
        ("a", 3),  # one value for a list is a list of one
        ({"a": 1, "b": 2}, 3),
        (7, 3),
        (None, 1),  # null: no items, and one for the field
        ([], 1),
    ],
    ids=repr,
)
def test_a_list_variable_counts_its_items_whatever_they_are(ids: Any, cost: int) -> None:
    assert charged(MATRIX, {"ids": ids}) == cost


def test_a_literal_float_for_first_is_refused_by_validation() -> None:
    for query in (
        "{ changes(first: 10.0) { revision } }",
        "query Q($n: Int = 10.0) { changes(first: $n) { revision } }",
    ):
        decision = gate(LIMIT).admit(query, None, {}, PRINCIPAL)
        assert isinstance(decision, Refused)
        assert [e.message for e in decision.errors] == [
            "Int cannot represent non-integer value: 10.0"
        ]


def test_lists_written_out_count_their_items() -> None:
    matrix = f'{{ checkMatrix(type: "t", ids: {strings(7)}, features: {strings(3)}) }}'
    assert charged(matrix) == 21
    assert charged('{ checkMatrix(type: "t", ids: "one", features: ["f", "g"]) }') == 2
    query = (
        "query Q($a: String!, $b: String!) "
        '{ checkMatrix(type: "t", ids: [$a, $b, $a], features: [$b]) }'
    )
    assert charged(query, {"a": "x", "b": "y"}) == 3
    # Nothing the variables hold can change that size: it is measured once, for the text.
    assert charged(query, {"a": ["x"] * 50, "b": ["y"] * 50}) == 3
    checks = (
        "query Q($r: ResourceInput!) "
        f'{{ checks(items: [{ITEM}, {{resource: $r, feature: "g"}}]) {{ enabled }} }}'
    )
    assert charged(checks, {"r": {"type": "t", "id": "2"}}) == 2


# -- 3. a list's selection is charged once per item -----------------------------------------

PER_ITEM = [
    pytest.param(
        "query Q($items: [CheckInput!]!) "
        "{ checks(items: $items) { enabled feature resource { id } } }",
        {"items": items(300)},
        300,  # the items; the rest of each answer is built from its item
        id="checks-plain",
    ),
    pytest.param(
        "query Q($items: [CheckInput!]!) { checks(items: $items) { resource { features } } }",
        {"items": items(300)},
        300 + 300 * 1,
        id="checks-features",
    ),
    pytest.param(
        "query Q($items: [CheckInput!]!) { checks(items: $items) "
        '{ resource { a: hasFeature(feature: "a") b: hasFeature(feature: "b") } } }',
        {"items": items(300)},
        300 + 300 * 2,
        id="checks-hasFeature",
    ),
    pytest.param(
        "query Q($items: [CheckInput!]!) { checks(items: $items) "
        "{ resource { history(first: 10) { edges { node { feature } } } } } }",
        {"items": items(30)},
        30 + 30 * (10 + 1),
        id="checks-history",
    ),
    pytest.param(
        f"{{ checks(items: {items_literal(40)}) {{ ...C }} }} "
        "fragment C on Check { resource { features } }",
        None,
        40 + 40 * 1,
        id="checks-literal-fragment",
    ),
    pytest.param(
        "mutation M($items: [CheckInput!]!) { addFeatures(items: $items) "
        "{ ... on BulkChange { changedCount changes { feature resource { features } } } } }",
        {"items": items(250)},
        250 + 1 + 250 * 1,
        id="addFeatures",
    ),
    pytest.param(
        "mutation M($items: [CheckInput!]!) { removeFeatures(items: $items) "
        "{ ... on BulkChange { changes { resource { history { totalCount } } } } } }",
        {"items": items(20)},
        20 + 1 + 20 * 100,
        id="removeFeatures-history",
    ),
    pytest.param(
        "mutation M($a: [CheckInput!]!, $r: [CheckInput!]!) { "
        "a: addFeatures(items: $a) { ...Changes } r: removeFeatures(items: $r) { ...Changes } } "
        "fragment Changes on BulkChangeResult "
        "{ ... on BulkChange { changes { resource { features } } } }",
        {"a": items(3), "r": items(50)},
        (3 + 1 + 3) + (50 + 1 + 50),  # one fragment, measured for each size
        id="bulk-fragment",
    ),
    pytest.param(
        'mutation M($f: [String!]!) { setFeatures(resource: {type: "t", id: "1"}, features: $f) '
        "{ ... on FeaturesSet { resource { features } features added removed } } }",
        {"f": ["f"] * 400},
        400 + 1 + 3,
        id="setFeatures",
    ),
    pytest.param(
        "query Q($n: Int) { features(first: $n) { edges { node { resources(first: 5) "
        "{ edges { cursor } } } } pageInfo { hasNextPage } } }",
        {"n": 60},
        60 + 1 + 60 * (5 + 1),
        id="features-resources",
    ),
    pytest.param(
        '{ resources(type: "t", first: 70) '
        '{ totalCount edges { node { features hasFeature(feature: "f") } } } }',
        None,
        70 + 1 + 70 * 2,
        id="resources",
    ),
    pytest.param(
        "{ resourceTypes(first: 8) { name resources(first: 9) { edges { node "
        "{ history(first: 4) { edges { node { resource { features } } } } } } } } }",
        None,
        8 + 8 * (9 + 1 + 9 * (4 + 1 + 4 * 1)),
        id="nested-pages",
    ),
    pytest.param(
        '{ history(feature: "f", first: 30) { edges { node { resource { features } } } } }',
        None,
        30 + 1 + 30,
        id="history",
    ),
    pytest.param(
        "query Q($n: Int!) { changes(first: $n) { revision resource { features } } }",
        {"n": 200.0},
        200 + 200,
        id="changes-float",
    ),
    pytest.param(
        "query Q($n: Int! = 3000) { snapshot(first: $n) { revision assignments hasNextPage } }",
        None,
        3000 + 1,
        id="snapshot-default",
    ),
    pytest.param(
        '{ feature(name: "f") '
        "{ resources(first: 40) { edges { node { features } } } history { totalCount } } }",
        None,
        1 + (40 + 1 + 40) + 100,
        id="feature",
    ),
    pytest.param(
        '{ resource(type: "t", id: "1") '
        "{ features history(first: 50) { edges { node { resource { features } } } } } }",
        None,
        1 + 1 + (50 + 1 + 50),
        id="resource",
    ),
]


@pytest.mark.parametrize(("query", "variables", "cost"), PER_ITEM)
def test_a_lists_selection_is_charged_once_per_item(
    query: str, variables: dict[str, Any] | None, cost: int
) -> None:
    assert_costs(query, variables, cost)


@pytest.mark.parametrize(("size", "fits"), [(LIMIT // 2, True), (LIMIT // 2 + 1, False)])
def test_checks_of_resources_features_at_the_limit(size: int, fits: bool) -> None:
    query = "query Q($items: [CheckInput!]!) { checks(items: $items) { resource { features } } }"
    decision = gate(LIMIT).admit(query, None, {"items": items(size)}, PRINCIPAL)
    assert refused_cost(decision) == (None if fits else 2 * size)


def test_the_ten_thousand_checks_a_request_may_hold_fit_the_default_limit() -> None:
    query = (
        "query Q($items: [CheckInput!]!) "
        "{ checks(items: $items) { enabled feature resource { type id } } }"
    )
    assert charged(query, {"items": items(10_000)}) == 10_000
    bulk = (
        "mutation M($items: [CheckInput!]!) { addFeatures(items: $items) { ... on BulkChange "
        "{ changedCount revision changes { resource { type id } feature changed revision } } } }"
    )
    assert charged(bulk, {"items": items(10_000)}) == 10_001


# -- what a field costs besides its size ------------------------------------------------


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ("{ revision }", 0),  # a scalar without arguments
        ("{ __typename }", 0),
        ("{ viewer { name } }", 1),  # an object at the root
        ("{ a: viewer { name } b: health { status } revision }", 2),
        ('{ hasFeature(resource: {type: "t", id: "1"}, feature: "f") }', 1),  # arguments
        ('{ resource(type: "t", id: "1") { type id features } }', 2),  # and a list
        ("{ viewer { scopes } }", 2),
    ],
)
def test_what_a_field_costs_besides_its_size(query: str, cost: int) -> None:
    assert charged(query) == cost


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ("{ resourceTypes { name } }", 1000),
        ("{ snapshot { revision } }", 1000),
        ("{ changes { revision } }", 100),
        ("{ features { edges { cursor } } }", 100 + 1),
        ('{ feature(name: "f") { resources { totalCount } } }', 1 + 100),
        ("{ features(first: null) { pageInfo { hasNextPage } } }", 100),
    ],
)
def test_a_size_left_out_is_the_arguments_default(query: str, cost: int) -> None:
    assert charged(query) == cost


def test_fragments_are_charged_like_their_fields() -> None:
    query = (
        "query Q($items: [CheckInput!]!) { "
        'hasFeature(resource: {type: "t", id: "1"}, feature: "f") '
        "... { checks(items: $items) { resource { features } } } "
        '... on Query { checkMatrix(type: "t", ids: ["a", "b"], features: ["f"]) } '
        "...Page } fragment Page on Query { changes(first: 5) { revision } }"
    )
    assert charged(query, {"items": items(10)}) == 1 + (10 + 10) + 2 + 5


@pytest.mark.parametrize(
    ("query", "static"),
    [
        ('query Q($f: String!) { hasFeature(resource: {type: "t", id: "1"}, feature: $f) }', True),
        ('query Q($a: String!) { checkMatrix(type: $a, ids: [$a, $a], features: ["f"]) }', True),
        ("query Q { ...F } fragment F on Query { changes(first: 5) { revision } }", True),
        ("query Q($n: Int) { changes(first: $n) { revision } }", False),
        ('query Q($n: Int) { feature(name: "f") { resources(first: $n) { totalCount } } }', False),
        (
            'query Q($n: Int) { node(nodeId: "x") '
            "{ ... on Feature { resources(first: $n) { totalCount } } } }",
            False,
        ),
        ("query Q($n: Int = 5) { ... { changes(first: $n) { revision } } }", False),
        (
            # (a default of its own: the lowest graphql-core allowed, 3.3.0, refuses a
            # nullable variable in a fragment's non-null argument, even one with a default)
            "query Q($n: Int = 5) { ...F } fragment F on Query { changes(first: $n) { revision } }",
            False,
        ),
    ],
)
def test_a_cost_no_variable_can_change_is_measured_once(query: str, static: bool) -> None:
    limited = gate(LIMIT)
    prepared = limited.prepare(query)
    if static:
        # Measured with the text, and each request for it answered alike, from memory.
        cost = charged(query, {"f": "f", "a": "a"})
        assert prepared.static_costs == {"Q": cost}
        first = limited.admit(query, "Q", {"f": "f", "a": "a"}, PRINCIPAL)
        assert isinstance(first, Admitted)
        assert limited.admit(query, "Q", {"f": "g", "a": "b"}, PRINCIPAL) is first
    else:
        # Measured for each request, with its own variables.
        assert prepared.static_costs == {}
        small = limited.admit(query, "Q", {"n": 1}, PRINCIPAL)
        assert isinstance(small, Admitted)
        assert refused_cost(limited.admit(query, "Q", {"n": 5000}, PRINCIPAL)) in (5000, 5001)
        assert limited.admit(query, "Q", {"n": 1}, PRINCIPAL) is not small


def test_introspection_lists_are_charged_at_their_size_in_this_schema() -> None:
    schema = build_schema().graphql_schema
    types = list(schema.type_map.values())

    def average(sizes: list[int]) -> int:
        """The mean of ``sizes``, rounded up, and at least 2."""
        return max(2, math.ceil(sum(sizes) / len(sizes)))

    fields = average([len(getattr(t, "fields", None) or {}) for t in types])
    arguments = average(
        [
            len(f.args)
            for t in types
            for f in (getattr(t, "fields", None) or {}).values()
            if hasattr(f, "args")
        ]
        + [
            0
            for t in types
            for f in (getattr(t, "fields", None) or {}).values()
            if not hasattr(f, "args")
        ]
    )
    possible = average(
        [len(schema.get_possible_types(t)) for t in types if hasattr(t, "resolve_type")]
    )
    count = {
        "{ __schema { types { fields { name } } } }": 2 + len(types),
        "{ __schema { directives { args { name } } } }": 2 + len(schema.directives),
        "{ __schema { types { fields { args { name } } } } }": 2 + len(types) * (1 + fields),
        "{ __schema { types { inputFields { type { fields { name } } } } } }": 2
        + len(types) * (1 + fields),
        "{ __schema { types { interfaces { fields { name } } } } }": 2 + len(types) * (1 + 2),
        "{ __schema { types { possibleTypes { fields { name } } } } }": 2
        + len(types) * (1 + possible),
        '{ __type(name: "Query") { fields { args { type { fields { name } } } } } }': 2
        + fields * (1 + arguments),
    }
    assert {query: charged(query) for query in count} == count


def schema_with_defaults(kind: str) -> GraphQLSchema:
    """A schema whose sizes have defaults of their own (those of this service's schema are
    Strawberry's, or none): written in SDL (defaults as literals), or in Python (values)."""
    if kind == "sdl":
        return schema_of(
            """
            type Query {
              defaulted(ids: [String!] = ["a", "b", "c"]): [Item!]
              optional(ids: [String!]): [Item!]
              page(first: Int = 3): [Item!]
              all: [Item!]
            }
            type Item { id: String! tags: [String!] }
            """
        )
    item = GraphQLObjectType(
        "Item",
        {"tags": GraphQLField(GraphQLList(GraphQLString)), "id": GraphQLField(GraphQLString)},
    )
    strings = GraphQLList(GraphQLNonNull(GraphQLString))
    return GraphQLSchema(
        GraphQLObjectType(
            "Query",
            {
                "defaulted": GraphQLField(
                    GraphQLList(item),
                    {"ids": GraphQLArgument(strings, default=GraphQLDefaultInput(["a", "b", "c"]))},
                ),
                "optional": GraphQLField(GraphQLList(item), {"ids": GraphQLArgument(strings)}),
                "page": GraphQLField(
                    GraphQLList(item),
                    {"first": GraphQLArgument(GraphQLInt, default=GraphQLDefaultInput(3))},
                ),
                "all": GraphQLField(GraphQLList(item)),
            },
        )
    )


@pytest.mark.parametrize("kind", ["sdl", "python"])
def test_an_arguments_own_default_and_null_count_as_graphql_reads_them(kind: str) -> None:
    meter = Gate(schema_with_defaults(kind), Limits(max_cost=0))

    def cost(query: str, variables: dict[str, Any] | None = None) -> int:
        found = refused_cost(meter.admit(query, None, variables, PRINCIPAL))
        return 0 if found is None else found

    assert cost("{ defaulted { tags } }") == 3 + 3
    assert cost("{ page { tags } }") == 3 + 3
    assert cost("{ defaulted(ids: null) { tags } }") == 1
    assert cost('{ defaulted(ids: "x") { tags } }') == 1 + 1
    assert cost("{ optional { tags } }") == 1
    variable = "query Q($v: [String!]) { defaulted(ids: $v) { tags } }"
    assert cost(variable) == 3 + 3  # left out: the argument's default
    assert cost(variable, {"v": None}) == 1  # null given: no items
    assert cost(variable, {"v": ["a"] * 7}) == 7 + 7
    # A list of objects with no size at all is charged as a default page.
    assert cost("{ all { id tags } }") == 1 + 100 * 1


def test_introspection_bounds_follow_the_schema() -> None:
    # A field of many arguments, and one union of many types.
    arguments = ", ".join(f"a{i}: Int" for i in range(120))
    members = " | ".join(f"T{i}" for i in range(9))
    objects = " ".join(f"type T{i} {{ x: Int }}" for i in range(9))
    schema = schema_of(f"type Query {{ f({arguments}): Int u: U }} union U = {members} {objects}")
    types = list(schema.type_map.values())
    fields = [f for t in types for f in (getattr(t, "fields", None) or {}).values()]
    per_field = math.ceil(sum(len(getattr(f, "args", None) or {}) for f in fields) / len(fields))
    per_type = math.ceil(len(fields) / len(types))
    assert per_field > 2
    meter = Gate(schema, Limits(max_cost=0))
    for query, cost in (
        (
            '{ __type(name: "Query") { fields { args { type { fields { name } } } } } }',
            1 + 1 + max(2, per_type) * (1 + per_field * 1),
        ),
        ('{ __type(name: "U") { possibleTypes { fields { name } } } }', 1 + 1 + 9 * 1),
    ):
        assert refused_cost(meter.admit(query, None, None, PRINCIPAL)) == cost, query


# -- the README's worked example ----------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_example() -> tuple[str, int, int]:
    """The README's worked example: its query, how many items it is given, and its cost."""
    section = README[README.index("**How cost is counted.**") :]
    query = re.search(r"```graphql\n(.*?)```", section, re.S)
    count = re.search(r"holding ([\d,]+) items", section)
    cost = re.search(r"= \*\*([\d,]+)\*\*", section)
    assert query is not None
    assert count is not None
    assert cost is not None
    return (
        query.group(1),
        int(count.group(1).replace(",", "")),
        int(cost.group(1).replace(",", "")),
    )


async def test_the_readme_example_costs_what_the_readme_says(start_server: StartServer) -> None:
    query, count, cost = readme_example()
    server = await start_server("memory")
    response = await server.gql(query, {"items": items(count)})
    assert response.codes == ["QUERY_TOO_COMPLEX"]
    assert response.errors[0]["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "cost": cost,
        "limit": 20_000,
    }
    assert server.events() == []


# -- over HTTP: what the gate charges against what execution does ---------------------------


@pytest.fixture(params=[True, False], ids=["fast-path", "general-path"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_the_default_attack_is_refused_before_any_store_call(
    start_server: StartServer, fast_path: bool
) -> None:
    server = await start_server("memory", fast_path=fast_path)
    thousand = strings(1000)
    query = (
        f"query Q($ids: [String!]! = {thousand}, $fs: [String!]! = {thousand}) "
        '{ checkMatrix(type: "t", ids: $ids, features: $fs) }'
    )
    response = await server.gql(query)
    assert response.codes == ["QUERY_TOO_COMPLEX"]
    assert response.errors[0]["extensions"]["cost"] == 1_000_000
    assert server.events() == []
    # Given small, the same text runs.
    small = await server.gql(query, {"ids": ["a", "b"], "fs": ["f"]})
    assert small.data == {"checkMatrix": [[False], [False]]}


async def test_a_float_page_size_over_http(start_server: StartServer) -> None:
    server = await start_server("memory", limits=Limits(max_cost=LIMIT))
    for i in range(3):
        await server.service.api.add(("t", str(i)), "f")
    before = len(server.events())
    fits = await server.gql(CHANGES, {"n": float(LIMIT)})
    assert fits.errors == []
    assert len(fits.data["changes"]) == 3
    over = await server.gql(CHANGES, {"n": float(LIMIT + 1)})
    assert over.codes == ["QUERY_TOO_COMPLEX"]
    assert over.errors[0]["extensions"]["cost"] == LIMIT + 1
    # Values GraphQL refuses are refused by its coercion, before any store call.
    for value in (10.5, 2.0**31, "10"):
        refused = await server.gql(CHANGES, {"n": value})
        assert refused.data is None
        assert refused.codes == ["GRAPHQL_VALIDATION_FAILED"]
        assert refused.errors[0]["message"].startswith("Variable '$n' has invalid value: Int")
    literal = await server.gql("{ changes(first: 10.0) { revision } }")
    assert literal.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert len(server.events()) == before + 1, "only the admitted request asked the store"


@pytest.mark.parametrize("size", [1, 40])
async def test_what_checks_are_charged_covers_what_they_ask_of_the_store(
    start_server: StartServer, fast_path: bool, size: int
) -> None:
    query = (
        "query Q($items: [CheckInput!]!) "
        '{ checks(items: $items) { enabled resource { features hasFeature(feature: "g") } } }'
    )
    cost = size + size * 2
    variables = {"items": items(size)}
    tight = await start_server("memory", fast_path=fast_path, limits=Limits(max_cost=cost - 1))
    refused = await tight.gql(query, variables)
    assert refused.codes == ["QUERY_TOO_COMPLEX"]
    assert refused.errors[0]["extensions"]["cost"] == cost
    assert tight.events() == []
    server = await start_server("memory", fast_path=fast_path, limits=Limits(max_cost=cost))
    response = await server.gql(query, variables)
    assert response.errors == []
    assert len(response.data["checks"]) == size
    # The checks, each resource's features, and each resource's hasFeature: all charged.
    assert sum(event.items for event in server.events()) == cost


async def test_a_bulk_mutations_changes_are_charged_per_item(start_server: StartServer) -> None:
    query = (
        "mutation M($items: [CheckInput!]! = " + items_literal(30) + ") { addFeatures(items: "
        "$items) { ... on BulkChange { changes { resource { features } } } } }"
    )
    cost = 30 + 1 + 30
    tight = await start_server("memory", limits=Limits(max_cost=cost - 1))
    refused = await tight.gql(query)
    assert refused.errors[0]["extensions"]["cost"] == cost
    server = await start_server("memory", limits=Limits(max_cost=cost))
    response = await server.gql(query)
    assert response.errors == []
    assert len(response.data["addFeatures"]["changes"]) == 30
    assert sum(event.items for event in server.events()) <= cost


# -- the property: never less than execution touches ---------------------------------------

SOURCES = ("literal", "variable", "default", "nested")


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any], int, int]:
    """A query of checks and checkMatrix fields, or a mutation of bulk changes, each size
    given in one of SOURCES; the store items its execution touches, counted from the
    sizes drawn; and how many fields it has."""
    mutation = draw(st.booleans())
    declared: list[str] = []
    variables: dict[str, Any] = {}
    fields: list[str] = []
    truth = 0

    def sized(kind: str, count: int, item: str, value: Any) -> str:
        """The list of ``count`` items as an argument, in a source drawn."""
        source = draw(st.sampled_from(SOURCES))
        name = f"v{len(declared)}"
        if source == "literal" or (source == "nested" and count == 0):
            return "[" + ", ".join([item] * count) + "]"
        if source == "nested":
            declared.append(f"${name}: {kind}!")
            variables[name] = value
            return "[" + ", ".join([f"${name}"] * count) + "]"
        if source == "default":
            literal = "[" + ", ".join([item] * count) + "]"
            declared.append(f"${name}: [{kind}!]! = {literal}")
            return f"${name}"
        declared.append(f"${name}: [{kind}!]!")
        variables[name] = [value] * count
        return f"${name}"

    for index in range(draw(st.integers(1, 4))):
        count = draw(st.integers(0, 40))
        item = {"resource": {"type": "t", "id": "1"}, "feature": "f"}
        if mutation:
            field = draw(st.sampled_from(("addFeatures", "removeFeatures")))
            argument = sized("CheckInput", count, ITEM, item)
            loads = draw(st.booleans())  # each change's resource's features
            changes = "changes { resource { features } }" if loads else "changes { feature }"
            fields.append(
                f"f{index}: {field}(items: {argument}) {{ ... on BulkChange {{ {changes} }} }}"
            )
            truth += count + (count if loads else 0)
        elif draw(st.booleans()):
            argument = sized("CheckInput", count, ITEM, item)
            asks = draw(st.integers(0, 2))  # hasFeature per resource, per item
            extra = " ".join(f'h{j}: hasFeature(feature: "f{j}")' for j in range(asks))
            fields.append(
                f"f{index}: checks(items: {argument}) {{ enabled resource {{ id {extra} }} }}"
            )
            truth += count + count * asks
        else:
            columns = draw(st.integers(0, 40))
            ids = sized("String", count, '"i"', "i")
            features = sized("String", columns, '"f"', "f")
            fields.append(f'f{index}: checkMatrix(type: "t", ids: {ids}, features: {features})')
            truth += count * columns
    keyword = "mutation" if mutation else "query"
    signature = f"({', '.join(declared)})" if declared else ""
    return f"{keyword} Q{signature} {{ {' '.join(fields)} }}", variables, truth, len(fields)


@settings(max_examples=200, deadline=None)
@given(documents())
def test_the_charge_is_never_less_than_what_execution_touches(
    document: tuple[str, dict[str, Any], int, int],
) -> None:
    query, variables, truth, fields = document
    assert gate(0).prepare(query).errors == [], query
    cost = charged(query, variables)
    assert cost >= truth, (query, json.dumps(variables)[:200])
    # Nor much more: at most one for a field asking for no items, one for a list of changes.
    assert cost <= truth + 2 * fields
