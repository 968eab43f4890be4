"""The gate's other decisions, made before anything runs: parse and validate once (and
keep it, within a budget), the shape limits (selections in one place, depth), which
operation a request names, the method, and the caller's scopes.

Driven at the gate itself (:mod:`tests.test_admission_cost` has its costs), over the
service's schema; the HTTP tests (test_trust, test_hot_path_caches, test_graphql_http)
show the same decisions as answers.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from features_gql.auth import AuthPolicy, Principal
from features_gql.graphql.admission import (
    Admitted,
    Gate,
    Limits,
    PreparedQuery,
    QueryCache,
    Refused,
)
from features_gql.graphql.schema import build_schema

ANYONE = AuthPolicy.open().anonymous_principal
READER = Principal("reader", frozenset({"read"}))
NOBODY = Principal("nobody", frozenset())


def gate(**limits: int) -> Gate:
    return build_schema(limits=Limits(**limits)).gate


def refusal(decision: Admitted | Refused) -> list[dict[str, Any]]:
    """The errors of a refusal, as a client reads them."""
    assert isinstance(decision, Refused)
    return [error.formatted for error in decision.errors]


# -- parse once, within a budget ------------------------------------------------------------


def test_a_text_is_parsed_and_validated_once() -> None:
    checker = gate()
    query = "query Q { revision }"
    prepared = checker.prepare(query)
    assert checker.prepare(query) is prepared
    assert checker.cache.get(query) is prepared
    first = checker.admit(query, "Q", None, ANYONE)
    assert isinstance(first, Admitted)
    assert (first.prepared, first.document, first.operation_name, first.principal) == (
        prepared,
        prepared.document,
        "Q",
        ANYONE,
    )
    assert first.operation.name is not None
    assert first.operation.name.value == "Q"
    # The same question, the same answer, without asking again.
    assert checker.admit(query, "Q", None, ANYONE) is first


def test_a_prepared_query_is_charged_more_than_the_memory_it_holds() -> None:
    # About 105 bytes of parsed document per character of text, measured: charged more.
    checker = gate()
    for query in ("{ revision }", "{ " + " ".join(f"a{i}: revision" for i in range(99)) + " }"):
        size = checker.prepare(query).size
        assert size >= 1024 + 128 * len(query) + sys.getsizeof(query) - 1


def entry(size: int) -> PreparedQuery:
    return PreparedQuery(None, [], size)


def test_the_cache_keeps_the_most_recently_used_entries() -> None:
    cache = QueryCache(max_entries=2, max_bytes=1000)
    a, b, c = entry(10), entry(20), entry(30)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.bytes == 30
    assert cache.get("a") is a  # now the most recent
    cache.put("c", c)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (a, None, c)
    assert (len(cache), cache.bytes) == (2, 40)
    # Putting a key again replaces its entry, and its bytes.
    again = entry(5)
    cache.put("a", again)
    assert (cache.get("a"), len(cache), cache.bytes) == (again, 2, 35)
    assert cache.get("missing") is None


def test_the_cache_is_bounded_in_bytes() -> None:
    cache = QueryCache(max_entries=100, max_bytes=100)
    cache.put("a", entry(25))  # a quarter of the budget: kept
    cache.put("b", entry(26))  # more than a quarter: never kept
    assert (len(cache), cache.bytes) == (1, 25)
    for key in "cde":
        cache.put(key, entry(25))
    assert (len(cache), cache.bytes) == (4, 100)  # exactly the budget
    cache.put("f", entry(1))
    assert (cache.get("a"), len(cache), cache.bytes) == (None, 4, 76)


def test_an_entry_that_does_not_parse_is_refused_with_its_syntax_error() -> None:
    decision = gate().admit("{ revision", None, None, ANYONE)
    assert [e["message"] for e in refusal(decision)] == [
        "Syntax Error: Expected Name, found <EOF>."
    ]


def test_parsing_stops_at_the_token_limit() -> None:
    checker = gate(max_tokens=8)
    assert isinstance(checker.admit("{ a: revision b: revision }", None, None, ANYONE), Admitted)
    refused = checker.admit("{ a: revision b: revision c: revision }", None, None, ANYONE)
    assert [e["message"] for e in refusal(refused)] == [
        "Syntax Error: Document contains more than 8 tokens. Parsing aborted."
    ]


# -- selections in one place, and depth -----------------------------------------------------


def test_a_crowded_selection_set_is_refused_wherever_it_is() -> None:
    checker = gate(max_selections=3)
    fits = "{ a: revision b: revision c: revision }"
    assert isinstance(checker.admit(fits, None, None, ANYONE), Admitted)
    crowded = "{ a: name b: name c: name d: name }"
    for query in (
        "{ a: revision b: revision c: revision d: revision }",
        f'{{ feature(name: "f") {crowded} }}',
        f'query {{ ...F }} fragment F on Query {{ feature(name: "f") {crowded} }}',
    ):
        column = 1 + (query.index(crowded) if crowded in query else 0)
        assert refusal(checker.admit(query, None, None, ANYONE)) == [
            {
                "message": "A selection set holds 4 selections; at most 3 are allowed. Ask "
                "for many checks with `checks` or `checkMatrix` instead of aliases.",
                "locations": [{"line": 1, "column": column}],
                "extensions": {"code": "QUERY_TOO_COMPLEX", "limit": 3},
            }
        ], query


@pytest.mark.parametrize(
    ("query", "depth"),
    [
        ("{ revision }", 1),
        ('{ feature(name: "f") { name } }', 2),
        ('{ feature(name: "f") { resources { edges { node { id } } } } }', 5),
        ('{ feature(name: "f") { __typename } }', 1),
        ('{ __typename feature(name: "f") { name } }', 2),
        ('{ ... { feature(name: "f") { ... on Feature { resources { totalCount } } } } }', 3),
        (
            "fragment N on Feature { resources { edges { cursor } } } "
            'query { feature(name: "f") { ...N } a: feature(name: "g") { ...N } }',
            4,
        ),
        # Introspection is bounded by its cost, not its depth.
        ("{ __schema { types { fields { type { ofType { ofType { name } } } } } } }", 0),
    ],
)
def test_depth_counts_levels_of_fields(query: str, depth: int) -> None:
    assert isinstance(gate(max_depth=depth).admit(query, None, None, ANYONE), Admitted)
    if depth:
        refused = gate(max_depth=depth - 1).admit(query, None, None, ANYONE)
        assert refusal(refused)[0]["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": depth}


def test_a_refusal_for_depth_names_the_operation() -> None:
    checker = gate(max_depth=1)
    named = checker.admit('query Deep { feature(name: "f") { name } }', "Deep", None, ANYONE)
    assert refusal(named) == [
        {
            "message": "Deep is nested 2 levels deep; at most 1 are allowed.",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "QUERY_TOO_DEEP", "depth": 2},
        }
    ]
    anonymous = checker.admit('{ feature(name: "f") { name } }', None, None, ANYONE)
    assert refusal(anonymous)[0]["message"] == (
        "the operation is nested 2 levels deep; at most 1 are allowed."
    )
    # Every operation of a document is measured, whichever one a request names.
    both = 'query Flat { revision } query Deep { feature(name: "f") { name } }'
    assert refusal(checker.admit(both, "Flat", None, ANYONE))[0]["message"].startswith("Deep")


def test_operations_after_fragments_are_measured_too() -> None:
    query = 'fragment N on Feature { name } query Deep { feature(name: "f") { ...N } }'
    assert refusal(gate(max_depth=1).admit(query, "Deep", None, ANYONE))[0]["extensions"] == {
        "code": "QUERY_TOO_DEEP",
        "depth": 2,
    }
    prepared = gate().prepare(query)
    assert prepared.static_costs == {"Deep": 1}


# -- which operation, which method ----------------------------------------------------------


def test_a_request_must_name_one_operation_of_the_document() -> None:
    checker = gate()
    two = "query A { revision } query B { revision }"
    for name, message in (
        (None, "Must provide operation name if query contains multiple operations."),
        ("C", "Unknown operation named 'C'."),
    ):
        decision = checker.admit(two, name, None, ANYONE)
        assert isinstance(decision, Refused)
        assert decision.http_status == 400
        assert refusal(decision) == [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]
    picked = checker.admit(two, "B", None, ANYONE)
    assert isinstance(picked, Admitted)
    assert picked.operation_name == "B"
    # Only names that select an operation are remembered: a client sending any names it
    # likes cannot grow the entry.
    assert checker.prepare(two).selected == {"B": picked.operation}
    # A document of one operation: named or not, and no other name.
    one = "query A { revision }"
    assert isinstance(checker.admit(one, None, None, ANYONE), Admitted)
    assert refusal(checker.admit(one, "B", None, ANYONE))[0]["message"] == (
        "Unknown operation named 'B'."
    )


def test_a_mutation_must_be_posted() -> None:
    checker = gate()
    mutation = 'mutation Archive { archiveFeature(name: "f") { __typename } }'
    refused = checker.admit(mutation, "Archive", None, ANYONE, method="GET")
    assert isinstance(refused, Refused)
    assert (refused.http_status, refused.allow, refused.operation_name) == (405, "POST", "Archive")
    assert refusal(refused) == [
        {
            "message": "A mutation must be sent with POST.",
            "extensions": {"code": "METHOD_NOT_ALLOWED"},
        }
    ]
    assert isinstance(checker.admit(mutation, "Archive", None, ANYONE), Admitted)
    assert isinstance(checker.admit("{ revision }", None, None, ANYONE, method="GET"), Admitted)


def test_refusals_name_the_operation() -> None:
    query = 'query Big { checkMatrix(type: "t", ids: ["a", "b"], features: ["f"]) }'
    refused = gate(max_cost=1).admit(query, "Big", None, ANYONE)
    assert isinstance(refused, Refused)
    assert refused.operation_name == "Big"
    assert refusal(refused) == [
        {
            "message": "This request would ask for 2 items; the limit is 1. Split it into "
            "smaller requests.",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "QUERY_TOO_COMPLEX", "cost": 2, "limit": 1},
        }
    ]


# -- scopes ---------------------------------------------------------------------------------


def test_a_caller_without_the_scope_is_refused_field_by_field() -> None:
    query = (
        'query Q { a: hasFeature(resource: {type: "t", id: "1"}, feature: "f") __typename '
        'a: hasFeature(resource: {type: "t", id: "1"}, feature: "f") ...R ...R '
        "... on Query { b: revision ...S } } "
        "fragment R on Query { r: revision ...S } fragment S on Query { s: revision }"
    )
    refused = gate().admit(query, "Q", None, NOBODY)
    assert isinstance(refused, Refused)
    assert (refused.has_data, refused.operation_name) == (True, "Q")
    assert refused.data == {"a": None, "__typename": "Query", "r": None, "s": None, "b": None}
    # One error per response key, in the order of the fields (a fragment's, once).
    assert [(e["path"], e["locations"][0]["column"]) for e in refusal(refused)] == [
        (["a"], 1 + query.index("a: has")),
        (["r"], 1 + query.index("r: revision")),
        (["s"], 1 + query.index("s: revision")),
        (["b"], 1 + query.index("b: revision")),
    ]
    assert refusal(refused)[0] == {
        "message": "The token 'nobody' lacks the 'read' scope needed for hasFeature.",
        "locations": [{"line": 1, "column": 11}],
        "path": ["a"],
        "extensions": {"code": "FORBIDDEN", "scope": "read"},
    }


def test_a_non_null_field_refused_nulls_the_whole_answer() -> None:
    query = "{ revision viewer { name } b: revision ...R ...R } fragment R on Query { r: revision }"
    refused = gate().admit(query, None, None, NOBODY)
    assert isinstance(refused, Refused)
    assert refused.data is None
    # Still one error per field.
    assert [e["path"] for e in refusal(refused)] == [["revision"], ["viewer"], ["b"], ["r"]]


def test_writes_need_the_write_scope() -> None:
    mutation = 'mutation { archiveFeature(name: "f") { __typename } }'
    refused = gate().admit(mutation, None, None, READER)
    assert isinstance(refused, Refused)
    assert refused.data == {"archiveFeature": None}
    assert refusal(refused)[0]["message"] == (
        "The token 'reader' lacks the 'write' scope needed for archiveFeature."
    )
    assert isinstance(gate().admit("{ revision }", None, None, READER), Admitted)


# -- introspection ----------------------------------------------------------------------------


def test_introspection_can_be_turned_off() -> None:
    query = "{ __schema { queryType { name } } }"
    schema = build_schema().graphql_schema
    assert Gate(schema).introspection is True
    assert isinstance(Gate(schema).admit(query, None, None, ANYONE), Admitted)
    closed = Gate(schema, introspection=False)
    assert closed.introspection is False
    assert refusal(closed.admit(query, None, None, ANYONE))[0]["message"].startswith(
        "GraphQL introspection has been disabled"
    )
    assert isinstance(closed.admit("{ __typename revision }", None, None, ANYONE), Admitted)
