"""The store contract: the definition of a correct features-gql store.

Subclass :class:`StoreContract` in a test module and override the ``make_store``
fixture so it returns a callable that builds a new, unopened store over *empty*
storage. Every test opens the store, runs a scenario and closes it. Tests are
plain synchronous pytest tests that run their own event loop, so no async pytest
plugin is needed.

Capability flags let a store say what it honestly cannot do:

* ``persistent`` (default True): data survives closing the store and opening a new
  one built by the same ``make_store`` (file or server stores), which
  ``test_data_survives_reopening`` checks; a store that keeps its data in memory sets
  it False, and that test is skipped.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features_gql.domain import Assignment, ChangeEvent, Resource
from features_gql.errors import ChangesTrimmed
from features_gql.stores.base import Store

Scenario = Callable[[Store], Awaitable[None]]

PIPELINE = Resource("pipeline", "db8e9a0d-b9b1-4e7a-ab21-a2b289da032b")

#: Ids that break naive stores: separators, quotes, unicode, query syntax, maximum length.
UNUSUAL_IDS = [
    "a/b/c",
    "with spaces",
    " leading and trailing ",
    "quote'\"`",
    "日本語-ид-🚀",
    "e\u0301",  # combining accent: not normalised
    "$where.x",
    '{"$gt": ""}',
    "'; DROP TABLE assignments; --",
    "%2F%00",
    "\\backslash\\",
    "x" * 256,
    "🙂" * 256,
]


async def read_snapshot(store: Store, *, limit: int) -> tuple[int, list[Assignment]]:
    """Every page of a snapshot: the revision of the first page, and the assignments."""
    first = await store.snapshot_page(None, limit=limit)
    found, page = list(first.assignments), first.assignments
    while len(page) == limit:
        page = (await store.snapshot_page(found[-1], limit=limit)).assignments
        assert len(page) <= limit
        found += page
    return first.revision, found


def apply_changes(state: set[Assignment], changes: list[ChangeEvent]) -> None:
    for change in changes:
        key = Assignment(change.resource.type, change.resource.id, change.feature)
        if change.op == "add":
            state.add(key)
        else:
            state.discard(key)


def run_with_store(make_store: Callable[[], Store], scenario: Scenario) -> None:
    """Open a store from ``make_store``, run ``scenario`` on it, close it."""

    async def main() -> None:
        store = make_store()
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


class StoreContract:
    """Scenarios every store must pass. Override ``make_store``; set capability flags."""

    persistent: ClassVar[bool] = True

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        raise NotImplementedError(
            "override the make_store fixture: return a callable building a new store "
            "over empty storage"
        )

    def run(self, make_store: Callable[[], Store], scenario: Scenario) -> None:
        run_with_store(make_store, scenario)

    # -- round trips --------------------------------------------------------------------

    def test_new_store_is_empty(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            assert await store.has(PIPELINE, "speedups") is False
            assert await store.features_of_many([PIPELINE]) == [[]]
            assert await store.resources_with("speedups", type=None, after=None, limit=10) == []
            assert await store.revision() == 0
            assert await store.changes_since(0, limit=10) == []
            await store.ping()

        self.run(make_store, scenario)

    def test_added_feature_is_there(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            result = await store.add(PIPELINE, "speedups", actor=None)
            assert result.changed is True
            assert result.revision == 1
            assert await store.has(PIPELINE, "speedups") is True
            assert await store.features_of_many([PIPELINE]) == [["speedups"]]

        self.run(make_store, scenario)

    def test_removed_feature_is_gone(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            await store.add(PIPELINE, "speedups", actor=None)
            result = await store.remove(PIPELINE, "speedups", actor=None)
            assert result.changed is True
            assert result.revision == 2
            assert await store.has(PIPELINE, "speedups") is False
            assert await store.features_of_many([PIPELINE]) == [[]]
            assert await store.resources_with("speedups", type=None, after=None, limit=10) == []

        self.run(make_store, scenario)

    # -- idempotency --------------------------------------------------------------------

    def test_adding_twice_changes_nothing_the_second_time(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            first = await store.add(PIPELINE, "speedups", actor=None)
            second = await store.add(PIPELINE, "speedups", actor=None)
            assert (first.changed, second.changed) == (True, False)
            assert second.revision == first.revision
            assert len(await store.changes_since(0, limit=10)) == 1

        self.run(make_store, scenario)

    def test_removing_an_absent_feature_changes_nothing(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            result = await store.remove(PIPELINE, "speedups", actor=None)
            assert result.changed is False
            assert result.revision == 0
            await store.add(PIPELINE, "other", actor=None)
            result = await store.remove(PIPELINE, "speedups", actor=None)
            assert (result.changed, result.revision) == (False, 1)
            assert await store.changes_since(0, limit=10) == await store.changes_since(0, limit=10)
            assert len(await store.changes_since(0, limit=10)) == 1

        self.run(make_store, scenario)

    # -- independence -------------------------------------------------------------------

    def test_resources_are_independent(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            same_id_other_type = Resource("app", PIPELINE.id)
            other_id = Resource("pipeline", "another")
            await store.add(PIPELINE, "speedups", actor=None)
            assert await store.has(same_id_other_type, "speedups") is False
            assert await store.has(other_id, "speedups") is False
            await store.add(other_id, "speedups", actor=None)
            await store.remove(other_id, "speedups", actor=None)
            assert await store.has(PIPELINE, "speedups") is True

        self.run(make_store, scenario)

    def test_features_are_independent(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            await store.add(PIPELINE, "speedups", actor=None)
            await store.add(PIPELINE, "speedups-v2", actor=None)
            await store.remove(PIPELINE, "speedups-v2", actor=None)
            assert await store.has(PIPELINE, "speedups") is True
            assert await store.has(PIPELINE, "speedups-v2") is False
            assert await store.has(PIPELINE, "speedup") is False

        self.run(make_store, scenario)

    # -- bulk reads ---------------------------------------------------------------------

    def test_features_of_many_answers_in_order_and_sorted(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            a, b, c = Resource("app", "a"), Resource("app", "b"), Resource("app", "c")
            for feature in ("zeta", "alpha", "mid"):
                await store.add(a, feature, actor=None)
            await store.add(c, "beta", actor=None)
            answer = await store.features_of_many([c, b, a, c])
            assert answer == [["beta"], [], ["alpha", "mid", "zeta"], ["beta"]]

        self.run(make_store, scenario)

    def test_check_many_answers_in_order(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            resources = [Resource("app", f"app-{i}") for i in range(50)]
            for i, resource in enumerate(resources):
                if i % 3 == 0:
                    await store.add(resource, "f", actor=None)
            items = [(r, "f") for r in resources] + [(r, "g") for r in resources]
            items += [(resources[0], "f")] * 3  # repeated questions get repeated answers
            answers = await store.check_many(items)
            expected = [i % 3 == 0 for i in range(50)] + [False] * 50 + [True] * 3
            assert answers == expected

        self.run(make_store, scenario)

    def test_check_many_handles_large_batches(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            await store.add(Resource("app", "x-4321"), "f", actor=None)
            items = [(Resource("app", f"x-{i}"), "f") for i in range(5000)]
            answers = await store.check_many(items)
            assert answers.count(True) == 1
            assert answers[4321] is True

        self.run(make_store, scenario)

    # -- pagination ---------------------------------------------------------------------

    def test_resources_with_orders_by_type_then_id(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            resources = [
                Resource("pipeline", "b"),
                Resource("app", "z"),
                Resource("pipeline", "a"),
                Resource("app", "a"),
                Resource("app", "B"),
                Resource("app", "é"),
                Resource("app", "😀"),
                Resource("app", "~"),
            ]
            for resource in resources:
                await store.add(resource, "f", actor=None)
            await store.add(Resource("app", "not-this-one"), "g", actor=None)
            found = await store.resources_with("f", type=None, after=None, limit=100)
            # Code point order: "B" < "a" < "z" < "~" < "é" < "😀".
            assert found == sorted(resources)

        self.run(make_store, scenario)

    def test_resources_with_pages_without_gaps_or_repeats(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            resources = [Resource(t, f"{t}-{i:03}") for t in ("app", "pipeline") for i in range(25)]
            for resource in resources:
                await store.add(resource, "f", actor=None)
            seen: list[Resource] = []
            after: Resource | None = None
            # Bounded: a store whose cursor never moves on must fail here, not loop.
            for _ in range(len(resources) // 7 + 2):
                page = await store.resources_with("f", type=None, after=after, limit=7)
                assert len(page) <= 7
                if not page:
                    break
                if after is not None:
                    assert page[0] > after, "`after` must exclude the cursor itself"
                seen += page
                after = page[-1]
            else:
                pytest.fail(f"paging never reached the end; pages so far held {seen}")
            assert seen == sorted(resources)

        self.run(make_store, scenario)

    def test_resources_with_filters_by_type(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            for resource in (
                Resource("app", "1"),
                Resource("pipeline", "2"),
                Resource("zone", "0"),
            ):
                await store.add(resource, "f", actor=None)
            found = await store.resources_with("f", type="pipeline", after=None, limit=10)
            assert found == [Resource("pipeline", "2")]
            after_app = await store.resources_with(
                "f", type="pipeline", after=Resource("app", "9"), limit=10
            )
            assert after_app == [Resource("pipeline", "2")]

        self.run(make_store, scenario)

    def test_cursor_after_a_removed_resource_still_works(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            for name in "abcde":
                await store.add(Resource("app", name), "f", actor=None)
            page = await store.resources_with("f", type=None, after=None, limit=2)
            await store.remove(page[-1], "f", actor=None)
            rest = await store.resources_with("f", type=None, after=page[-1], limit=10)
            assert rest == [Resource("app", n) for n in "cde"]

        self.run(make_store, scenario)

    # -- change log ---------------------------------------------------------------------

    def test_change_log_records_every_change_in_order(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            await store.add(PIPELINE, "speedups", actor="alice")
            await store.add(PIPELINE, "speedups", actor="alice")  # no change, no event
            await store.add(Resource("app", "x"), "beta", actor=None)
            await store.remove(PIPELINE, "speedups", actor="bob")
            changes = await store.changes_since(0, limit=100)
            assert [(c.revision, c.op, c.resource, c.feature, c.actor) for c in changes] == [
                (1, "add", PIPELINE, "speedups", "alice"),
                (2, "add", Resource("app", "x"), "beta", None),
                (3, "remove", PIPELINE, "speedups", "bob"),
            ]
            for change in changes:
                assert isinstance(change.at, datetime)
                assert change.at.utcoffset() is not None, "change times must be timezone-aware"
            assert changes[0].at <= changes[1].at <= changes[2].at
            assert await store.revision() == 3

        self.run(make_store, scenario)

    def test_changes_since_resumes_after_a_revision(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            for i in range(10):
                await store.add(PIPELINE, f"f{i}", actor=None)
            assert [c.revision for c in await store.changes_since(4, limit=3)] == [5, 6, 7]
            assert [c.revision for c in await store.changes_since(8, limit=100)] == [9, 10]
            assert await store.changes_since(10, limit=100) == []

        self.run(make_store, scenario)

    # -- unusual ids --------------------------------------------------------------------

    @pytest.mark.parametrize("resource_id", UNUSUAL_IDS, ids=range(len(UNUSUAL_IDS)))
    def test_unusual_ids_round_trip(
        self, make_store: Callable[[], Store], resource_id: str
    ) -> None:
        async def scenario(store: Store) -> None:
            resource = Resource("app", resource_id)
            await store.add(resource, "f", actor=None)
            assert await store.has(resource, "f") is True
            assert await store.check_many([(resource, "f")]) == [True]
            assert await store.features_of_many([resource]) == [["f"]]
            assert await store.resources_with("f", type="app", after=None, limit=5) == [resource]
            (change,) = await store.changes_since(0, limit=5)
            assert change.resource == resource
            # A prefix or a differently normalised id is a different resource.
            assert await store.has(Resource("app", resource_id[:-1] or "?"), "f") is False

        self.run(make_store, scenario)

    # -- concurrency --------------------------------------------------------------------

    def test_concurrent_writers_lose_nothing(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            features = [f"f{i}" for i in range(50)]
            results = await asyncio.gather(
                *(store.add(PIPELINE, feature, actor=None) for feature in features)
            )
            assert all(result.changed for result in results)
            assert sorted(r.revision for r in results) == list(range(1, 51))
            assert await store.features_of_many([PIPELINE]) == [sorted(features)]
            revisions = [c.revision for c in await store.changes_since(0, limit=100)]
            assert revisions == list(range(1, 51))

        self.run(make_store, scenario)

    def test_concurrent_adds_of_one_feature_change_it_once(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            results = await asyncio.gather(
                *(store.add(PIPELINE, "speedups", actor=None) for _ in range(20))
            )
            assert sum(result.changed for result in results) == 1
            assert len(await store.changes_since(0, limit=100)) == 1

        self.run(make_store, scenario)

    # -- persistence --------------------------------------------------------------------

    def test_data_survives_reopening(self, make_store: Callable[[], Store]) -> None:
        if not self.persistent:
            pytest.skip("this store does not claim persistence")

        async def write(store: Store) -> None:
            await store.add(PIPELINE, "speedups", actor="alice")

        async def read(store: Store) -> None:
            assert await store.has(PIPELINE, "speedups") is True
            assert await store.revision() == 1
            await store.add(PIPELINE, "more", actor=None)
            assert await store.revision() == 2

        self.run(make_store, write)
        self.run(make_store, read)

    # -- model-based --------------------------------------------------------------------

    @settings(
        max_examples=25,
        deadline=None,
        # One store per test, not per example (examples use their own namespace), and the
        # same test body runs from each subclass: both checks are by design here.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["add", "remove"]),
                st.sampled_from(["a", "b", "c/d", "é"]),
                st.sampled_from(["x", "y", "z"]),
            ),
            max_size=30,
        )
    )
    def test_behaves_like_a_set_of_assignments(
        self, make_store: Callable[[], Store], ops: list[tuple[str, str, str]]
    ) -> None:
        # Each example writes under its own resource type, so examples sharing one
        # store never see each other's data.
        namespace = "t" + uuid.uuid4().hex

        async def scenario(store: Store) -> None:
            model: set[tuple[str, str]] = set()
            start = await store.revision()
            changes = 0
            for op, rid, feature in ops:
                resource = Resource(namespace, rid)
                before = (rid, feature) in model
                result = await (store.add if op == "add" else store.remove)(
                    resource, feature, actor=None
                )
                if op == "add":
                    model.add((rid, feature))
                else:
                    model.discard((rid, feature))
                assert result.changed is (before != ((rid, feature) in model))
                changes += result.changed
            assert await store.revision() == start + changes
            ids = ["a", "b", "c/d", "é"]
            resources = [Resource(namespace, rid) for rid in ids]
            expected: list[Any] = [sorted(f for r, f in model if r == rid) for rid in ids]
            assert await store.features_of_many(resources) == expected
            for feature in ("x", "y", "z"):
                found = await store.resources_with(feature, type=namespace, after=None, limit=10)
                assert found == sorted(Resource(namespace, r) for r, f in model if f == feature)

        self.run(make_store, scenario)

    # -- snapshots and feed -------------------------------------------------------------

    def test_snapshot_of_an_empty_store(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            page = await store.snapshot_page(None, limit=10)
            assert (page.revision, page.assignments) == (0, [])

        self.run(make_store, scenario)

    def test_snapshot_pages_hold_every_assignment_in_order(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            expected: set[Assignment] = set()
            for i, resource_id in enumerate([*UNUSUAL_IDS, "B", "a", "é", "~"]):
                for feature in ("f", "g")[: 1 + i % 2]:
                    await store.add(Resource(("app", "pipeline")[i % 2], resource_id), feature,
                                    actor=None)  # fmt: skip
                    expected.add(Assignment(("app", "pipeline")[i % 2], resource_id, feature))
            await store.add(PIPELINE, "gone", actor=None)
            await store.remove(PIPELINE, "gone", actor=None)
            # Page sizes at the boundaries: 1, a size that divides nothing, all, more.
            for limit in (1, 4, len(expected), len(expected) + 1):
                revision, found = await read_snapshot(store, limit=limit)
                assert revision == await store.revision()
                # Code point order, as Python compares strings.
                assert found == sorted(expected), limit
            page = await store.snapshot_page(sorted(expected)[-1], limit=10)
            assert page.assignments == []
            # A cursor that is not an assignment (removed, or never there) still works.
            after = Assignment("app", "b", "")
            rest = (await store.snapshot_page(after, limit=100)).assignments
            assert rest == [a for a in sorted(expected) if a > after]

        self.run(make_store, scenario)

    @pytest.mark.parametrize("seed", range(3))
    def test_snapshot_then_later_changes_converge(
        self, make_store: Callable[[], Store], seed: int
    ) -> None:
        """Pages read while writers change the store, then the changes after the revision
        of the first page, give exactly the store's state."""
        rng = random.Random(seed)
        keys = [
            (Resource(t, i), f) for t in ("app", "zone") for i in ("1", "2", "é", "x/y")
            for f in ("a", "b")
        ]  # fmt: skip

        async def write(store: Store, times: int) -> None:
            for _ in range(times):
                resource, feature = rng.choice(keys)
                op = store.add if rng.random() < 0.6 else store.remove
                await op(resource, feature, actor=None)

        async def scenario(store: Store) -> None:
            await write(store, 20)
            first = await store.snapshot_page(None, limit=3)
            replica, page = set(first.assignments), first.assignments
            while len(page) == 3:
                # Writers run between pages, and alongside the page being read.
                _, next_page = await asyncio.gather(
                    write(store, rng.randrange(4)), store.snapshot_page(page[-1], limit=3)
                )
                page = next_page.assignments
                replica.update(page)
            await write(store, 5)
            apply_changes(replica, await store.changes_since(first.revision, limit=1000))
            truth = {
                Assignment(r.type, r.id, f)
                for r, features in zip(
                    [k[0] for k in keys],
                    await store.features_of_many([k[0] for k in keys]),
                    strict=True,
                )
                for f in features
            }
            assert replica == truth

        self.run(make_store, scenario)

    def test_trimmed_change_log_answers_resync(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            assert await store.trim_changes(5) == 0  # nothing to trim yet
            for i in range(10):
                await store.add(PIPELINE, f"f{i}", actor=None)
            assert await store.trim_changes(7) == 7
            assert await store.trim_changes(7) == 0
            assert [c.revision for c in await store.changes_since(7, limit=10)] == [8, 9, 10]
            assert [c.revision for c in await store.changes_since(9, limit=10)] == [10]
            with pytest.raises(ChangesTrimmed) as trimmed:
                await store.changes_since(6, limit=10)
            assert (trimmed.value.after, trimmed.value.first_retained) == (6, 8)
            with pytest.raises(ChangesTrimmed):
                await store.changes_since(0, limit=10)
            # The latest event always stays: a trimmed log never looks empty.
            assert await store.trim_changes(100) == 2
            assert [c.revision for c in await store.changes_since(9, limit=10)] == [10]
            with pytest.raises(ChangesTrimmed):
                await store.changes_since(8, limit=10)
            assert await store.changes_since(10, limit=10) == []
            assert await store.revision() == 10
            await store.remove(PIPELINE, "f0", actor=None)
            assert [c.revision for c in await store.changes_since(10, limit=10)] == [11]
            # The snapshot and the changes after it still give the whole state.
            revision, found = await read_snapshot(store, limit=4)
            assert revision == 11
            assert found == [Assignment(PIPELINE.type, PIPELINE.id, f"f{i}") for i in range(1, 10)]

        self.run(make_store, scenario)
