"""The in-process batch checks: items, columns and the matrix agree, and name bad items."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features_gql import FeaturesAPI
from features_gql.domain import Resource
from features_gql.errors import InvalidInput
from features_gql_plugins.memory_store import MemoryStore

# Mostly valid names and ids, so that most batches are answered; a few break a rule.
types = st.sampled_from(["a", "b", "a", "b", "Bad"])
ids = st.sampled_from(["p1", "p2", "p1", "x y", "", "bad\nid"])
features = st.sampled_from(["beta", "a", "beta", "a", "bad name"])


async def _api() -> FeaturesAPI:
    store = MemoryStore()
    await store.open()
    api = FeaturesAPI(store, deadline=1.0)
    await api.add(("a", "p1"), "beta")
    await api.add(("b", "p2"), "a")
    return api


async def _outcome(call: object) -> object:
    try:
        return await call  # type: ignore[misc]
    except InvalidInput as exc:
        return (exc.field, exc.rule)


@settings(max_examples=60, deadline=None)
@example([("a", "p1", "beta"), ("b", "p2", "a"), ("b", "p2", "beta")])
@given(st.lists(st.tuples(types, ids, features), max_size=6))
async def test_columns_items_and_resources_answer_alike(
    asked: list[tuple[str, str, str]],
) -> None:
    api = await _api()
    by_columns = await _outcome(
        api.check_columns(
            [t for t, _, _ in asked], [i for _, i, _ in asked], [f for *_, f in asked]
        )
    )
    by_pairs = await _outcome(api.check_many([((t, i), f) for t, i, f in asked]))
    by_resources = await _outcome(api.check_many([(Resource(t, i), f) for t, i, f in asked]))
    assert by_columns == by_pairs == by_resources
    if isinstance(by_columns, list):
        expected = [(t, i, f) in {("a", "p1", "beta"), ("b", "p2", "a")} for t, i, f in asked]
        assert by_columns == expected


async def test_the_first_bad_item_is_named_whatever_breaks_after_it() -> None:
    api = await _api()
    with pytest.raises(InvalidInput) as caught:
        await api.check_columns(["a", "a", "BAD"], ["p1", "", "p1"], ["beta", "beta", "beta"])
    assert (caught.value.field, caught.value.rule) == ("items[1].resource.id", "length")


async def test_columns_of_different_lengths_are_refused() -> None:
    api = await _api()
    with pytest.raises(ValueError, match="differ in length"):
        await api.check_columns(["a", "a"], ["p1"], ["beta", "beta"])


async def test_no_questions_make_no_store_call() -> None:
    api = await _api()
    assert await api.check_columns([], [], []) == []
    assert await api.check_many([]) == []
