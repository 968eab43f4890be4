"""The catalog's in-memory view converges: whatever the point a load reads, and however
early, late, often or out of order changes reach it, it ends with the store's live
features. And before it has loaded it does not guess."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features_gql.catalog_view import CatalogView
from features_gql.domain import ChangeEvent, Resource
from features_gql.flag_evaluation import CatalogUnavailable, FlagNotFound, check_flag_key

NAMES = ("a", "b", "c")
AT = datetime(2030, 1, 1, tzinfo=UTC)


def live_after(changes: list[tuple[str, bool]]) -> set[str]:
    """The live features once ``changes`` (name, defined?) applied in order."""
    live: set[str] = set()
    for name, defined in changes:
        if defined:
            live.add(name)
        else:
            live.discard(name)
    return live


@given(
    changes=st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), max_size=12),
    data=st.data(),
)
def test_the_view_converges_whatever_the_load_point_and_the_order_of_notifications(
    changes: list[tuple[str, bool]], data: st.DataObject
) -> None:
    # Change i has revision i + 1; revisions that name no change are never told.
    revisions = st.integers(1, max(1, len(changes)))
    told = 6 if changes else 0
    # The load reads the revision `cut`, then the live names at some later point `read`.
    cut = data.draw(st.integers(0, len(changes)), label="cut")
    read = data.draw(st.integers(cut, len(changes)), label="read")
    # This process's own writes are told at once, possibly before the load, in any order.
    early = data.draw(st.lists(revisions, max_size=told), label="early")
    view = CatalogView(strict=True)
    for revision in early:
        name, defined = changes[revision - 1]
        view.record(name, defined, revision)
    view.replace(cut, live_after(changes[:read]))
    for revision in data.draw(st.lists(revisions, max_size=told), label="late"):
        name, defined = changes[revision - 1]
        view.record(name, defined, revision)  # told again, late
    # The change log from the cut, in order (repeated changes are ignored).
    for revision in range(cut + 1, len(changes) + 1):
        name, defined = changes[revision - 1]
        view.record(name, defined, revision)
    assert view.names == live_after(changes)
    for name in NAMES:
        assert view.is_unknown(name) == (name not in view.names)


@given(
    changes=st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), max_size=12),
    data=st.data(),
)
def test_with_no_change_log_each_change_told_once_converges_across_a_load(
    changes: list[tuple[str, bool]], data: st.DataObject
) -> None:
    """A store no other process writes is followed by this process's own notifications
    alone: each change told once, in order, some while the load is under way (before it
    lands) and the rest after. What the load's listing missed must not be lost."""
    cut = data.draw(st.integers(0, len(changes)), label="cut")
    read = data.draw(st.integers(cut, len(changes)), label="read")
    landed = data.draw(st.integers(cut, len(changes)), label="told before the load lands")
    view = CatalogView(strict=True)
    for revision in range(1, landed + 1):
        view.record(*changes[revision - 1], revision)
    view.replace(cut, live_after(changes[:read]))
    for revision in range(landed + 1, len(changes) + 1):
        view.record(*changes[revision - 1], revision)
    assert view.names == live_after(changes)


def test_apply_records_catalog_changes_and_ignores_assignments() -> None:
    view = CatalogView(strict=True)
    view.replace(0, ())
    assert view.apply(ChangeEvent(1, "define", None, "a", AT)) is True
    assert view.apply(ChangeEvent(2, "add", Resource("pipeline", "p1"), "b", AT)) is False
    assert view.apply(ChangeEvent(1, "define", None, "a", AT)) is False, "seen already"
    assert view.names == {"a"}
    assert view.apply(ChangeEvent(3, "archive", None, "a", AT)) is True
    assert view.names == frozenset()


def test_a_reset_forgets_what_the_store_no_longer_has() -> None:
    """A store restored from an older backup numbers its changes again from there."""
    view = CatalogView()
    view.replace(0, ())
    view.record("a", True, 9)
    view.replace(3, ["b"], reset=True)
    assert view.names == {"b"}
    assert view.record("a", True, 4) is True, "revision 4 is new again after the reset"


def test_before_loading_a_strict_view_does_not_guess_and_a_lenient_one_lists_nothing() -> None:
    strict = CatalogView(strict=True)
    with pytest.raises(CatalogUnavailable, match="retrying is safe"):
        strict.is_unknown("a")
    with pytest.raises(CatalogUnavailable):
        strict.defined()
    with pytest.raises(CatalogUnavailable):
        check_flag_key("a", strict)
    # A key that cannot be a feature name is not found, loaded or not.
    with pytest.raises(FlagNotFound):
        check_flag_key("Not A Name", strict)

    lenient = CatalogView(strict=False)
    assert lenient.is_unknown("a") is False
    assert lenient.defined() == frozenset()
    lenient.record("a", True, 1)  # told before loading: kept for the load to apply
    lenient.replace(0, ())
    assert lenient.defined() == {"a"}
    assert lenient.is_unknown("zzz") is False, "only a strict view calls a name unknown"
