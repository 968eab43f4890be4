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

The store itself says whether it implements the optional catalog, listing, history
and bulk operations (``Store.supports_catalog``); their scenarios are skipped for a
store that does not.

A store over a database server also runs :class:`NetworkStoreContract`, the one
outage-and-recovery section every such store shares: override its ``outage_server``
fixture with a server of the test's own, which the scenarios stop and start.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features_gql.api import FeaturesAPI
from features_gql.domain import (
    Assignment,
    ChangeEvent,
    FeatureFilter,
    FeatureInfo,
    FeatureSpec,
    HistoryQuery,
    Resource,
    ResourceTypeCount,
    WriteResult,
)
from features_gql.errors import (
    ChangesTrimmed,
    SnapshotsUnsupported,
    StoreTimeout,
    StoreUnavailable,
    StoreUnsupported,
)
from features_gql.events import OperationEvent
from features_gql.feed import ChangeFeed
from features_gql.replica import LocalReplica
from features_gql.stores.base import OPERATIONS, Store

Scenario = Callable[[Store], Awaitable[None]]

PIPELINE = Resource("pipeline", "db8e9a0d-b9b1-4e7a-ab21-a2b289da032b")
#: Times with whole milliseconds (MongoDB keeps no finer), around the time filters use.
NOW = datetime.now(UTC).replace(microsecond=0)
EARLIER = NOW - timedelta(days=3)
LATER = NOW + timedelta(days=30)

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


#: One call of each store operation (see ``OPERATIONS``), on plain arguments: the
#: contract makes every one of them, and the core's tests pass each through every
#: wrapper. An operation declared without its call here fails the contract.
OPERATION_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "ping": lambda store: store.ping(),
    "has": lambda store: store.has(PIPELINE, "calls"),
    "add": lambda store: store.add(PIPELINE, "calls", actor=None),
    "remove": lambda store: store.remove(PIPELINE, "calls", actor=None),
    "features_of_many": lambda store: store.features_of_many([PIPELINE]),
    "check_many": lambda store: store.check_many([(PIPELINE, "calls")]),
    "resources_with": lambda store: store.resources_with("calls", type=None, after=None, limit=10),
    "changes_since": lambda store: store.changes_since(0, limit=10),
    "revision": lambda store: store.revision(),
    "define": lambda store: store.define(FeatureSpec("calls"), actor=None),
    "archive": lambda store: store.archive("calls", actor=None),
    "feature_infos": lambda store: store.feature_infos(["calls"]),
    "list_features": lambda store: store.list_features(FeatureFilter(NOW), after=None, limit=10),
    "resource_types": lambda store: store.resource_types(after=None, limit=10),
    "resource_count": lambda store: store.resource_count(PIPELINE.type),
    "list_resources": lambda store: store.list_resources(PIPELINE.type, after=None, limit=10),
    "history": lambda store: store.history(HistoryQuery(), before=None, limit=10),
    "add_many": lambda store: store.add_many([(PIPELINE, "calls")], actor=None),
    "remove_many": lambda store: store.remove_many([(PIPELINE, "calls")], actor=None),
    "set_features": lambda store: store.set_features(PIPELINE, ["calls"], actor=None),
    "snapshot_page": lambda store: store.snapshot_page(None, limit=10),
    "trim_changes": lambda store: store.trim_changes(1),
}


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
        if change.resource is None or change.op not in ("add", "remove"):
            continue  # catalog changes move no assignment
        key = Assignment(change.resource.type, change.resource.id, change.feature)
        if change.op == "add":
            state.add(key)
        else:
            state.discard(key)


def run_with_store(
    make_store: Callable[[], Store], scenario: Scenario, *, skip_unsupported: bool = True
) -> None:
    """Open a store from ``make_store``, run ``scenario`` on it, close it."""

    async def main() -> None:
        store = make_store()
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    if not skip_unsupported:
        asyncio.run(main())
        return
    try:
        asyncio.run(main())
    except SnapshotsUnsupported as exc:
        # Snapshots and trimming are optional (replicas replay the change log without them).
        pytest.skip(str(exc))


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

    def run_all(self, make_store: Callable[[], Store], scenario: Scenario) -> None:
        """Like :meth:`run`, without skipping the test when snapshots are unsupported."""
        run_with_store(make_store, scenario, skip_unsupported=False)

    # -- the operations -----------------------------------------------------------------

    def test_every_declared_operation_answers_or_is_unsupported(
        self, make_store: Callable[[], Store]
    ) -> None:
        """Each operation ``Store`` declares, called once: a required one answers; an
        optional one answers, or raises StoreUnsupported (SnapshotsUnsupported for
        snapshots and trimming) when the store does not implement it."""
        assert set(OPERATION_CALLS) == {op.name for op in OPERATIONS}, (
            "every declared operation has its call in OPERATION_CALLS"
        )

        required = {
            op.name
            for op in OPERATIONS
            if getattr(getattr(Store, op.name), "__isabstractmethod__", False)
        }

        async def scenario(store: Store) -> None:
            unsupported = set()
            for op in OPERATIONS:
                try:
                    await OPERATION_CALLS[op.name](store)
                except (StoreUnsupported, SnapshotsUnsupported):
                    unsupported.add(op.name)
            assert not unsupported & required
            if store.supports_catalog:
                assert unsupported <= {"snapshot_page", "trim_changes"}

        self.run_all(make_store, scenario)

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

    # -- catalog, listings, history and bulk --------------------------------------------
    # Run when the store says it implements them (``Store.supports_catalog``); every
    # bundled store does.

    @staticmethod
    def require_catalog(store: Store) -> None:
        if not store.supports_catalog:
            pytest.skip(f"{store.name} does not implement the catalog operations")

    def test_catalog_is_empty_at_first(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            assert await store.feature_infos(["speedups"]) == [FeatureInfo("speedups")]
            assert await store.list_features(FeatureFilter(NOW), after=None, limit=10) == []
            assert await store.resource_types(after=None, limit=10) == []
            assert await store.resource_count("pipeline") == 0
            assert await store.list_resources("pipeline", after=None, limit=10) == []
            assert await store.history(HistoryQuery(), before=None, limit=10) == []

        self.run(make_store, scenario)

    def test_define_creates_updates_and_logs(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            created = await store.define(
                FeatureSpec("speedups", description="Faster builds", kind="release"),
                actor="alice",
            )
            assert (created.changed, created.revision) == (True, 1)
            definition = created.feature.definition
            assert definition is not None
            assert (definition.description, definition.kind, definition.owner) == (
                "Faster builds",
                "release",
                None,
            )
            assert definition.created_at.utcoffset() is not None
            assert created.feature == (await store.feature_infos(["speedups"]))[0]

            same = await store.define(FeatureSpec("speedups", kind="release"), actor="bob")
            assert (same.changed, same.revision) == (False, 1)

            # Fields left out are kept; a field given as None is cleared.
            updated = await store.define(
                FeatureSpec("speedups", owner="team-ci", description=None, expires_at=LATER),
                actor="bob",
            )
            assert (updated.changed, updated.revision) == (True, 2)
            definition = updated.feature.definition
            assert definition is not None
            assert (definition.description, definition.owner, definition.kind) == (
                None,
                "team-ci",
                "release",
            )
            assert definition.expires_at == LATER
            assert definition.created_at == created.feature.definition.created_at  # type: ignore[union-attr]
            assert definition.updated_at >= definition.created_at

            changes = await store.changes_since(0, limit=10)
            assert [(c.revision, c.op, c.resource, c.feature, c.actor) for c in changes] == [
                (1, "define", None, "speedups", "alice"),
                (2, "define", None, "speedups", "bob"),
            ]
            assert await store.revision() == 2

        self.run(make_store, scenario)

    def test_archive_retires_and_define_brings_back(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            never = await store.archive("unknown", actor=None)
            assert (never.changed, never.revision, never.feature) == (
                False,
                0,
                FeatureInfo("unknown"),
            )
            await store.define(FeatureSpec("old-ui", owner="web"), actor=None)
            await store.add(PIPELINE, "old-ui", actor=None)
            retired = await store.archive("old-ui", actor="carol")
            assert (retired.changed, retired.revision) == (True, 3)
            assert retired.feature.archived
            assert retired.feature.resource_count == 1
            assert retired.feature.definition is not None
            assert retired.feature.definition.owner == "web"
            again = await store.archive("old-ui", actor="carol")
            assert (again.changed, again.revision) == (False, 3)
            # Archiving keeps the assignments: checks answer as before.
            assert await store.has(PIPELINE, "old-ui") is True
            back = await store.define(FeatureSpec("old-ui"), actor=None)
            assert back.changed
            assert not back.feature.archived
            assert back.feature.definition is not None
            assert back.feature.definition.owner == "web"
            ops = [(c.op, c.resource) for c in await store.changes_since(0, limit=10)]
            assert ops == [
                ("define", None),
                ("add", PIPELINE),
                ("archive", None),
                ("define", None),
            ]

        self.run(make_store, scenario)

    def test_counts_follow_every_write(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            a, b, c = Resource("app", "a"), Resource("app", "b"), Resource("repo", "a")
            await store.add(a, "f", actor=None)
            await store.add(a, "g", actor=None)
            await store.add(b, "f", actor=None)
            await store.add(c, "f", actor=None)
            await store.add(c, "f", actor=None)  # no change, no count
            infos = await store.feature_infos(["f", "g", "h", "f"])
            assert [(i.name, i.resource_count, i.defined) for i in infos] == [
                ("f", 3, False),
                ("g", 1, False),
                ("h", 0, False),
                ("f", 3, False),
            ]
            assert await store.resource_types(after=None, limit=10) == [
                ResourceTypeCount("app", 2),
                ResourceTypeCount("repo", 1),
            ]
            assert await store.resource_count("app") == 2
            await store.remove(a, "f", actor=None)
            assert await store.resource_count("app") == 2  # a still has g
            await store.remove(a, "g", actor=None)
            assert await store.resource_count("app") == 1
            await store.remove(c, "f", actor=None)
            assert await store.resource_types(after=None, limit=10) == [ResourceTypeCount("app", 1)]
            # A feature nobody has and nobody defined leaves the catalog; a defined one stays.
            await store.define(FeatureSpec("f"), actor=None)
            await store.remove(b, "f", actor=None)
            listed = await store.list_features(FeatureFilter(NOW), after=None, limit=10)
            assert [(i.name, i.resource_count, i.defined) for i in listed] == [("f", 0, True)]
            assert await store.resource_types(after=None, limit=10) == []
            assert await store.list_resources("app", after=None, limit=10) == []

        self.run(make_store, scenario)

    def test_list_features_pages_by_name_and_filters(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            await store.define(
                FeatureSpec("beta-search", kind="experiment", description="Try the NEW Search"),
                actor=None,
            )
            await store.define(FeatureSpec("kill-switch", kind="ops"), actor=None)
            await store.define(
                FeatureSpec("old-flag", kind="release", expires_at=EARLIER), actor=None
            )
            await store.define(
                FeatureSpec("new-flag", kind="release", expires_at=LATER), actor=None
            )
            await store.define(FeatureSpec("retired", kind="release"), actor=None)
            await store.archive("retired", actor=None)
            await store.add(PIPELINE, "assigned-only", actor=None)
            await store.add(PIPELINE, "new-flag", actor=None)

            async def names(filter: FeatureFilter, limit: int = 100) -> list[str]:
                return [i.name for i in await store.list_features(filter, after=None, limit=limit)]

            everything = sorted(
                ["beta-search", "kill-switch", "old-flag", "new-flag", "retired", "assigned-only"]
            )
            assert await names(FeatureFilter(NOW)) == everything
            paged: list[str] = []
            after: str | None = None
            while True:
                page = await store.list_features(FeatureFilter(NOW), after=after, limit=4)
                if not page:
                    break
                paged += [i.name for i in page]
                after = page[-1].name
            assert paged == everything
            assert await names(FeatureFilter(NOW, kind="release")) == [
                "new-flag",
                "old-flag",
                "retired",
            ]
            assert await names(FeatureFilter(NOW, kind="release", archived=False)) == [
                "new-flag",
                "old-flag",
            ]
            assert await names(FeatureFilter(NOW, expired=True)) == ["old-flag"]
            assert "old-flag" not in await names(FeatureFilter(NOW, expired=False))
            assert await names(FeatureFilter(NOW, archived=True)) == ["retired"]
            assert await names(FeatureFilter(NOW, defined=False)) == ["assigned-only"]
            # search: part of the name, or of the description whatever its case.
            assert await names(FeatureFilter(NOW, search="flag")) == ["new-flag", "old-flag"]
            assert await names(FeatureFilter(NOW, search="new search")) == ["beta-search"]
            assert await names(FeatureFilter(NOW, search="zzz")) == []
            assert await names(FeatureFilter(NOW, kind="release"), limit=2) == [
                "new-flag",
                "old-flag",
            ]
            (listed,) = await store.list_features(
                FeatureFilter(NOW, search="new-flag"), after=None, limit=5
            )
            assert listed == (await store.feature_infos(["new-flag"]))[0]
            assert listed.resource_count == 1

        self.run(make_store, scenario)

    def test_resource_listings_page_by_type_and_id(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            ids = ["B", "a", "z", "~", "é", "😀", "a/b", "x" * 256]
            for id_ in ids:
                await store.add(Resource("app", id_), "f", actor=None)
                await store.add(Resource("app", id_), "g", actor=None)
            for i in range(3):
                await store.add(Resource(f"type-{i}", "only"), "f", actor=None)
            assert await store.list_resources("app", after=None, limit=100) == [
                Resource("app", id_) for id_ in sorted(ids)
            ]
            seen: list[str] = []
            after: str | None = None
            while True:
                page = await store.list_resources("app", after=after, limit=3)
                if not page:
                    break
                seen += [r.id for r in page]
                after = page[-1].id
            assert seen == sorted(ids)
            assert await store.list_resources("type-1", after=None, limit=10) == [
                Resource("type-1", "only")
            ]
            types = await store.resource_types(after="app", limit=2)
            assert types == [ResourceTypeCount("type-0", 1), ResourceTypeCount("type-1", 1)]
            assert await store.resource_count("app") == len(ids)

        self.run(make_store, scenario)

    def test_history_is_newest_first_and_filtered(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            other = Resource("app", "x")
            await store.add(PIPELINE, "f", actor="alice")  # 1
            await store.add(other, "f", actor="bob")  # 2
            await store.define(FeatureSpec("f"), actor="alice")  # 3
            await store.add(PIPELINE, "g", actor="bob")  # 4
            await store.remove(PIPELINE, "f", actor="alice")  # 5

            async def revisions(query: HistoryQuery, before: int | None = None) -> list[int]:
                events = await store.history(query, before=before, limit=100)
                assert all(query.keeps(e) for e in events)
                return [e.revision for e in events]

            assert await revisions(HistoryQuery()) == [5, 4, 3, 2, 1]
            assert await revisions(HistoryQuery(), before=3) == [2, 1]
            assert await revisions(HistoryQuery(resource=PIPELINE)) == [5, 4, 1]
            assert await revisions(HistoryQuery(feature="f")) == [5, 3, 2, 1]
            assert await revisions(HistoryQuery(actor="bob")) == [4, 2]
            assert await revisions(HistoryQuery(resource=PIPELINE, feature="f")) == [5, 1]
            assert await revisions(HistoryQuery(feature="f", actor="alice"), before=5) == [3, 1]
            assert await revisions(HistoryQuery(resource=other, actor="alice")) == []
            assert await revisions(HistoryQuery(actor="nobody")) == []
            first_two = await store.history(HistoryQuery(feature="f"), before=None, limit=2)
            assert [e.revision for e in first_two] == [5, 3]
            assert first_two[1].op == "define"
            assert first_two[1].resource is None
            assert first_two == (await store.changes_since(0, limit=10))[4:1:-2]

        self.run(make_store, scenario)

    def test_add_many_logs_each_change_in_order(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            a, b = Resource("app", "a"), Resource("app", "b")
            await store.add(a, "f", actor=None)  # 1
            result = await store.add_many(
                [(b, "g"), (a, "f"), (a, "g"), (b, "g"), (b, "f")], actor="bulk"
            )
            assert result.revisions == [2, None, 3, None, 4]
            assert (result.revision, result.refused) == (4, [])
            changes = await store.changes_since(1, limit=10)
            assert [(c.revision, c.op, c.resource, c.feature, c.actor) for c in changes] == [
                (2, "add", b, "g", "bulk"),
                (3, "add", a, "g", "bulk"),
                (4, "add", b, "f", "bulk"),
            ]
            assert await store.features_of_many([a, b]) == [["f", "g"], ["f", "g"]]
            infos = await store.feature_infos(["f", "g"])
            assert [i.resource_count for i in infos] == [2, 2]
            assert await store.resource_count("app") == 2
            nothing = await store.add_many([(a, "f"), (b, "g")], actor=None)
            assert (nothing.revisions, nothing.revision) == ([None, None], 4)
            assert (await store.add_many([], actor=None)).revision == 4

            removed = await store.remove_many(
                [(a, "f"), (a, "zzz"), (a, "g"), (a, "f")], actor="bulk"
            )
            assert (removed.revisions, removed.revision) == ([5, None, 6, None], 6)
            assert await store.features_of_many([a]) == [[]]
            assert await store.resource_count("app") == 1
            assert [i.resource_count for i in await store.feature_infos(["f", "g"])] == [1, 1]
            assert [c.op for c in await store.changes_since(4, limit=10)] == ["remove", "remove"]

        self.run(make_store, scenario)

    def test_unusual_ids_round_trip_in_bulk(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            resources = [Resource("app", id_) for id_ in UNUSUAL_IDS]
            added = await store.add_many([(r, "f") for r in resources], actor='o\'neil \\ "x"')
            assert added.revisions == list(range(1, len(resources) + 1))
            assert await store.check_many([(r, "f") for r in resources]) == [True] * len(resources)
            listed = await store.list_resources("app", after=None, limit=100)
            assert listed == sorted(resources)
            history = await store.history(
                HistoryQuery(actor='o\'neil \\ "x"'), before=None, limit=100
            )
            assert [c.resource for c in reversed(history)] == resources
            # Existing resources take the other way in: it must read the same ids.
            again = await store.add_many([(r, "g") for r in resources], actor=None)
            assert all(again.revisions)
            removed = await store.remove_many([(r, "f") for r in resources], actor=None)
            assert all(removed.revisions)
            assert await store.features_of_many(resources) == [["g"]] * len(resources)

        self.run(make_store, scenario)

    def test_strict_writes_refuse_undefined_or_archived_features(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            await store.define(FeatureSpec("ok"), actor=None)
            await store.define(FeatureSpec("gone"), actor=None)
            await store.archive("gone", actor=None)
            refused = await store.add_many(
                [(PIPELINE, "ok"), (PIPELINE, "nope"), (PIPELINE, "gone")],
                actor=None,
                require_defined=True,
            )
            assert (refused.refused, refused.revision) == (["gone", "nope"], 3)
            assert refused.revisions == [None, None, None]
            assert await store.features_of_many([PIPELINE]) == [[]]
            refused_set = await store.set_features(
                PIPELINE, ["ok", "nope"], actor=None, require_defined=True
            )
            assert (refused_set.refused, refused_set.added) == (["nope"], [])
            assert await store.revision() == 3
            accepted = await store.add_many([(PIPELINE, "ok")], actor=None, require_defined=True)
            assert (accepted.revisions, accepted.refused) == ([4], [])
            # Without the requirement, any feature may be assigned.
            loose = await store.add_many([(PIPELINE, "nope")], actor=None)
            assert loose.revisions == [5]

        self.run(make_store, scenario)

    def test_set_features_removes_then_adds(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            other = Resource("app", "other")
            await store.add_many([(PIPELINE, "a"), (PIPELINE, "b"), (other, "b")], actor=None)
            result = await store.set_features(PIPELINE, ["d", "b", "c", "d"], actor="ci")
            assert (result.removed, result.added, result.revision) == (["a"], ["c", "d"], 6)
            changes = await store.changes_since(3, limit=10)
            assert [(c.revision, c.op, c.feature, c.actor) for c in changes] == [
                (4, "remove", "a", "ci"),
                (5, "add", "c", "ci"),
                (6, "add", "d", "ci"),
            ]
            assert await store.features_of_many([PIPELINE, other]) == [["b", "c", "d"], ["b"]]
            same = await store.set_features(PIPELINE, ["b", "c", "d"], actor=None)
            assert (same.removed, same.added, same.revision) == ([], [], 6)
            emptied = await store.set_features(PIPELINE, [], actor=None)
            assert (emptied.removed, emptied.added) == (["b", "c", "d"], [])
            assert await store.resource_count(PIPELINE.type) == 0
            assert [(i.name, i.resource_count) for i in await store.feature_infos(["b", "c"])] == [
                ("b", 1),
                ("c", 0),
            ]

        self.run(make_store, scenario)

    def test_concurrent_bulk_writers_lose_nothing(self, make_store: Callable[[], Store]) -> None:
        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            batches = [[(Resource("app", f"r{i}"), f"f{j}") for j in range(5)] for i in range(10)]
            results = await asyncio.gather(*(store.add_many(b, actor=None) for b in batches))
            revisions = sorted(r for result in results for r in result.revisions if r)
            assert revisions == list(range(1, 51))
            assert await store.resource_count("app") == 10
            infos = await store.feature_infos([f"f{j}" for j in range(5)])
            assert [i.resource_count for i in infos] == [10] * 5

        self.run(make_store, scenario)

    def test_replaying_the_log_rebuilds_the_assignments(
        self, make_store: Callable[[], Store]
    ) -> None:
        """A follower that applies add and remove, and skips catalog changes, converges;
        repeating a bulk import changes nothing."""

        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            items = [(Resource(t, f"{t}-{i}"), f"f{i % 3}") for t in ("a", "b") for i in range(20)]
            await store.define(FeatureSpec("f0", kind="ops"), actor="import")
            await store.add_many(items, actor="import")
            await store.remove_many(items[::4], actor=None)
            await store.set_features(Resource("a", "a-1"), ["f2", "f9"], actor=None)
            await store.archive("f0", actor=None)
            revision = await store.revision()
            again = await store.add_many(items[2::4], actor="import")
            assert again.revision == revision
            assert not any(again.revisions)
            replica: set[tuple[Resource, str]] = set()
            for change in await store.changes_since(0, limit=1000):
                if change.op in ("add", "remove"):
                    assert change.resource is not None
                    (replica.add if change.op == "add" else replica.discard)(
                        (change.resource, change.feature)
                    )
            resources = sorted({r for r, _ in items})
            actual = await store.features_of_many(resources)
            expected = [sorted(f for r2, f in replica if r2 == r) for r in resources]
            assert actual == expected

        self.run(make_store, scenario)

    def test_catalog_survives_reopening(self, make_store: Callable[[], Store]) -> None:
        if not self.persistent:
            pytest.skip("this store does not claim persistence")

        async def write(store: Store) -> None:
            self.require_catalog(store)
            await store.define(
                FeatureSpec("speedups", owner="ci", kind="permission", expires_at=LATER),
                actor=None,
            )
            await store.add_many([(PIPELINE, "speedups"), (PIPELINE, "x")], actor=None)

        async def read(store: Store) -> None:
            (info,) = await store.feature_infos(["speedups"])
            assert info.resource_count == 1
            assert info.definition is not None
            assert (info.definition.owner, info.definition.kind) == ("ci", "permission")
            assert info.definition.expires_at == LATER
            assert await store.resource_count(PIPELINE.type) == 1
            assert (
                len(await store.history(HistoryQuery(resource=PIPELINE), before=None, limit=9)) == 2
            )

        self.run(make_store, write)
        self.run(make_store, read)

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        ops=st.lists(
            st.one_of(
                st.tuples(
                    st.sampled_from(["add_many", "remove_many"]),
                    st.lists(
                        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"])),
                        max_size=5,
                    ),
                ),
                st.tuples(
                    st.just("set"),
                    st.tuples(
                        st.sampled_from(["a", "b", "c"]),
                        st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
                    ),
                ),
                st.tuples(st.sampled_from(["define", "archive"]), st.sampled_from(["x", "z"])),
            ),
            max_size=12,
        )
    )
    def test_catalog_behaves_like_its_model(
        self, make_store: Callable[[], Store], ops: list[tuple[str, Any]]
    ) -> None:
        # Each example uses its own names, so examples sharing one store stay apart.
        ns = "t" + uuid.uuid4().hex[:12]

        async def scenario(store: Store) -> None:
            self.require_catalog(store)
            held: set[tuple[str, str]] = set()
            defined: dict[str, bool] = {}  # name -> archived
            start = await store.revision()
            changes = 0

            def res(rid: str) -> Resource:
                return Resource(ns, rid)

            def feat(name: str) -> str:
                return f"{ns}-{name}"

            for op, arg in ops:
                if op in ("add_many", "remove_many"):
                    items = [(res(r), feat(f)) for r, f in arg]
                    result = await (store.add_many if op == "add_many" else store.remove_many)(
                        items, actor=None
                    )
                    expected_changes = []
                    for r, f in arg:
                        before = (r, f) in held
                        (held.add if op == "add_many" else held.discard)((r, f))
                        expected_changes.append(before != ((r, f) in held))
                    assert [x is not None for x in result.revisions] == expected_changes
                    changes += sum(expected_changes)
                elif op == "set":
                    rid, wanted = arg
                    current = {f for r, f in held if r == rid}
                    result_set = await store.set_features(
                        res(rid), [feat(f) for f in wanted], actor=None
                    )
                    assert result_set.removed == [feat(f) for f in sorted(current - set(wanted))]
                    assert result_set.added == [feat(f) for f in sorted(set(wanted) - current)]
                    held = {(r, f) for r, f in held if r != rid} | {(rid, f) for f in wanted}
                    changes += len(result_set.removed) + len(result_set.added)
                elif op == "define":
                    result_def = await store.define(FeatureSpec(feat(arg)), actor=None)
                    assert result_def.changed is (defined.get(arg) is not False)
                    changes += result_def.changed
                    defined[arg] = False
                else:
                    result_def = await store.archive(feat(arg), actor=None)
                    assert result_def.changed is (defined.get(arg) is False)
                    changes += result_def.changed
                    if arg in defined:
                        defined[arg] = True
            assert await store.revision() == start + changes
            names = ["x", "y", "z"]
            infos = await store.feature_infos([feat(n) for n in names])
            for name, info in zip(names, infos, strict=True):
                assert info.resource_count == sum(1 for _, f in held if f == name)
                assert info.defined is (name in defined)
                assert info.archived is defined.get(name, False)
            listed = await store.list_features(FeatureFilter(NOW, search=ns), after=None, limit=10)
            in_use = {f for _, f in held} | set(defined)
            assert [i.name for i in listed] == [feat(n) for n in sorted(in_use)]
            holders = sorted({r for r, _ in held})
            assert await store.resource_count(ns) == len(holders)
            listed_resources = await store.list_resources(ns, after=None, limit=10)
            assert listed_resources == [res(r) for r in holders]
            history = await store.history(HistoryQuery(resource=res("a")), before=None, limit=100)
            assert [e.revision for e in history] == sorted(
                (e.revision for e in history), reverse=True
            )

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

    # -- following (features_gql.replication.follower) ----------------------------------
    # Every copy (the change feed, LocalReplica, the catalog view) follows a store through
    # the one follower: these check it against this store as a source.

    def test_a_follower_loads_the_store_then_follows_writes_made_beside_it(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            for i in range(7):
                await store.add(Resource("pipeline", f"p{i}"), "speedups", actor=None)
            await store.remove(Resource("pipeline", "p3"), "speedups", actor=None)
            replica = LocalReplica(FeaturesAPI(store), interval=0.01, batch=2)
            await replica.start()
            try:
                assert replica.revision == await store.revision() == 8
                assert replica.follower.status.state == "following"
                # Written to the store itself, as another process would: no write through
                # the replica's API wakes it, so it finds them by reading the log.
                for i in range(7, 12):
                    await store.add(Resource("pipeline", f"p{i}"), "speedups", actor=None)
                await store.remove(Resource("pipeline", "p0"), "speedups", actor=None)
                await until(lambda: replica.revision == 14)
                for i in range(12):
                    expected = i not in (0, 3)
                    assert replica.has(("pipeline", f"p{i}"), "speedups") is expected, i
                await until(lambda: replica.follower.status.caught_up)
                status = replica.follower.status
                assert (status.revision, status.source_revision) == (14, 14)
                assert status.lag_seconds == 0.0
                assert status.last_error is None
            finally:
                await replica.stop()

        self.run(make_store, scenario)

    def test_a_follower_resumes_after_its_revision_and_reloads_past_a_trimmed_log(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            await store.add(PIPELINE, "a", actor=None)
            replica = LocalReplica(FeaturesAPI(store), interval=0.01)
            await replica.start()
            try:
                await replica.follower.stop()
                await store.add(PIPELINE, "b", actor=None)
                replica.follower.start()  # resumes after revision 1: no reload
                await until(lambda: replica.has(PIPELINE, "b"))
                assert replica.loads == 1
                await replica.follower.stop()
                for i in range(10):
                    await store.add(Resource("pipeline", f"q{i}"), "c", actor=None)
                await store.remove(PIPELINE, "a", actor=None)
                await store.trim_changes(await store.revision())  # raises if unsupported
                replica.follower.start()  # the log no longer holds revision 2: a reload
                await until(lambda: replica.loads == 2 and replica.revision == 13)
                assert all(replica.has(("pipeline", f"q{i}"), "c") for i in range(10))
                assert replica.has(PIPELINE, "a") is False
                assert replica.has(PIPELINE, "b") is True
            finally:
                await replica.stop()

        self.run(make_store, scenario)

    def test_the_change_feed_delivers_every_change_once_in_order(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            api = FeaturesAPI(store)
            feed = ChangeFeed(api, poll_interval=0.01, batch=3, retain=4, backlog_page=2)
            await api.add(PIPELINE, "before", actor=None)
            received: list[int] = []

            async def subscriber() -> None:
                async for change in feed.subscribe(0):
                    received.append(change.revision)
                    if change.revision == 21:
                        return

            reading = asyncio.create_task(subscriber())
            try:
                for i in range(10):
                    # Through the API (which wakes the feed) and beside it (found by polling).
                    await api.add(Resource("pipeline", f"p{i}"), "a", actor=None)
                    await store.add(Resource("pipeline", f"p{i}"), "b", actor=None)
                async with asyncio.timeout(10):
                    await reading
                assert received == list(range(1, 22))
            finally:
                reading.cancel()
                await feed.stop()

        self.run(make_store, scenario)

    def test_a_store_that_pushes_its_changes_wakes_a_follower_in_another_process(
        self, make_store: Callable[[], Store]
    ) -> None:
        async def scenario(store: Store) -> None:
            if not store.shared_between_processes:
                pytest.skip("this store is not shared between processes")
            api = FeaturesAPI(store)
            if not await api.watch_store():
                pytest.skip("this store pushes no notices of its changes (followers poll)")
            await until(lambda: api.pushed)
            # A poll would take a minute: only the store's notice can bring the change.
            replica = LocalReplica(api, interval=60)
            await replica.start()
            other = make_store()  # another process's store over the same data
            await other.open()
            try:
                await other.add(PIPELINE, "pushed", actor=None)
                await until(lambda: replica.has(PIPELINE, "pushed"))
            finally:
                await other.close()
                await replica.stop()

        self.run(make_store, scenario)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``condition()`` holds, failing the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polled: the conditions are the copies' state, which nothing signals.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- stores over a database server: outage and recovery --------------------------------


@dataclass(frozen=True)
class OutageServer:
    """A database server of the test's own, which the scenarios stop and start again.

    ``start`` and ``stop`` block until done (they run in a thread); the server comes back
    on the same address, with its data. ``make_store`` builds a new, unopened store over
    it, with driver timeouts short enough that a call to a server that is down fails
    within a second or so. ``secrets`` (passwords) must appear in no log line and in no
    description of the store.
    """

    start: Callable[[], None]
    stop: Callable[[], None]
    make_store: Callable[[], Store]
    secrets: Sequence[str] = ()


class NetworkStoreContract:
    """Outage and recovery, for a store over a database server (the bundled ``mongodb``
    and ``postgres``; see :mod:`features_gql.stores.network` for the helpers that keep
    these rules).

    Subclass it beside :class:`StoreContract` and override the ``outage_server``
    fixture. Every scenario starts with the server stopped; the store must:

    * open while its database is down, fail each call fast and typed
      (``StoreUnavailable`` or ``StoreTimeout``, within the API's deadline), and set
      itself up on the first call that reaches the database once it is back;
    * do the same during an outage in the middle of a run, keep nothing half-done, and
      answer again after it, without being reopened;
    * when it pushes notices (``watch``), stop saying so during the outage and resume
      after it, with a notice to catch up.
    """

    #: The API's deadline in these scenarios.
    deadline: ClassVar[float] = 2.0
    #: The longest a store may take to answer again once its database is back.
    recovery: ClassVar[float] = 20.0

    @pytest.fixture
    def outage_server(self) -> OutageServer:
        raise NotImplementedError(
            "override the outage_server fixture: a server of the test's own (stopped), "
            "and a make_store over it"
        )

    def run_outage(self, server: OutageServer, scenario: OutageScenario) -> None:
        """Run ``scenario`` with a new store over ``server`` (stopped at first), logging
        into a list it checks for secrets."""
        lines: list[str] = []
        handler = _Collect(lines)
        logger = logging.getLogger("features_gql")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

        async def main() -> None:
            store = server.make_store()
            try:
                await scenario(store, server)
            finally:
                await store.close()
                await asyncio.to_thread(server.stop)
            for secret in server.secrets:
                assert secret not in store.describe()

        try:
            asyncio.run(main())
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        for secret in server.secrets:
            assert not [line for line in lines if secret in line], "a secret was logged"

    async def fails_fast(self, api: FeaturesAPI) -> None:
        """Calls fail, typed, within the deadline: the database is down."""
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: api.has(PIPELINE, "outage"),
            api.revision,
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises((StoreUnavailable, StoreTimeout)):
                await call()
            assert time.monotonic() - started < self.deadline + 1, "a dead database hung"
        with pytest.raises((StoreUnavailable, StoreTimeout)):
            await api.add(PIPELINE, "outage", actor=None)
        probe = await api.probe()
        assert (probe.up, probe.reason) in ((False, "unavailable"), (False, "timeout"))

    async def answers(self, api: FeaturesAPI) -> bool:
        """Whether PIPELINE has ``outage``, once the store answers again."""
        async with asyncio.timeout(self.recovery):
            while True:
                try:
                    return await api.has(PIPELINE, "outage")
                except (StoreUnavailable, StoreTimeout):
                    await asyncio.sleep(0.2)

    def test_opens_while_its_database_is_down_and_sets_up_when_it_returns(
        self, outage_server: OutageServer
    ) -> None:
        async def scenario(store: Store, server: OutageServer) -> None:
            started = time.monotonic()
            await store.open()  # the database is down: not fatal
            assert time.monotonic() - started < 5
            api = FeaturesAPI(store, deadline=self.deadline)
            await self.fails_fast(api)

            await asyncio.to_thread(server.start)
            assert await self.answers(api) is False
            assert await api.add(PIPELINE, "outage", actor=None) == WriteResult(True, 1)
            assert (await api.probe()).up
            assert await store.changes_since(0, limit=10) != []

        self.run_outage(outage_server, scenario)

    def test_fails_fast_during_an_outage_and_answers_after_it(
        self, outage_server: OutageServer
    ) -> None:
        async def scenario(store: Store, server: OutageServer) -> None:
            await asyncio.to_thread(server.start)
            await store.open()
            events: list[OperationEvent] = []
            api = FeaturesAPI(store, deadline=self.deadline, on_event=events.append)
            assert await api.add(PIPELINE, "outage", actor=None) == WriteResult(True, 1)
            # Several connections at once, which the outage will all break.
            answers = await asyncio.gather(*(api.has(PIPELINE, "outage") for _ in range(6)))
            assert all(answers)

            await asyncio.to_thread(server.stop)
            events.clear()
            await self.fails_fast(api)
            assert {e.outcome for e in events} <= {"unavailable", "timeout"}
            assert len(events) == 3

            await asyncio.to_thread(server.start)  # the same address, the same data
            assert await self.answers(api) is True
            assert (await api.probe()).up
            again = await api.add(PIPELINE, "after", actor=None)
            assert again == WriteResult(True, 2), "the write refused in the outage left nothing"
            changes = await api.changes_since(0)
            assert [(c.revision, c.feature) for c in changes] == [(1, "outage"), (2, "after")]

        self.run_outage(outage_server, scenario)

    def test_pushed_notices_stop_during_an_outage_and_resume_after_it(
        self, outage_server: OutageServer
    ) -> None:
        async def scenario(store: Store, server: OutageServer) -> None:
            await asyncio.to_thread(server.start)
            await store.open()
            notices: list[tuple[int, bool]] = []
            if not await store.watch(lambda revision, catalog: notices.append((revision, catalog))):
                pytest.skip("this store pushes no notices of its changes (followers poll)")
            await until(lambda: store.watching)
            await until(lambda: notices == [(0, True)])  # told to catch up on opening

            await asyncio.to_thread(server.stop)
            await until(lambda: not store.watching, within=self.recovery)
            await asyncio.to_thread(server.start)
            await until(lambda: store.watching, within=self.recovery)
            # Reopened: told to catch up, then of a change another process commits.
            await until(lambda: notices[-1:] == [(0, True)])
            other = server.make_store()
            await other.open()
            try:
                await other.add(PIPELINE, "pushed", actor=None)
                await until(lambda: notices[-1:] == [(1, False)])
            finally:
                await other.close()

        self.run_outage(outage_server, scenario)


OutageScenario = Callable[[Store, OutageServer], Awaitable[None]]


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
