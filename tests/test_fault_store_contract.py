"""The fault-injection stores are stores: with small delays, or no faults, they pass the
store contract. Plus their options and fault logic, store by store."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from features_gql import ConfigError, StoreConflict, StoreTimeout, StoreUnavailable
from features_gql.domain import Resource, WriteResult
from features_gql.faults import fault_controls, parse_operations
from features_gql.plugin_manager import collect, create_plugin_manager
from features_gql.stores import Store, StoreBuilder
from features_gql.testing import StoreContract
from features_gql_plugins.failing_store import FailingSettings, FailingStore, Outage
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.slow_store import SlowSettings, SlowStore

R = Resource("app", "a")


def builder() -> StoreBuilder:
    return StoreBuilder(collect(create_plugin_manager()).stores)


class TestSlowStore(StoreContract):
    """Latency with jitter on every operation must not change a single answer."""

    persistent = False

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        return lambda: SlowStore(MemoryStore(), SlowSettings(delay_ms=0.2, jitter_ms=0.5, seed=1))


class TestFailingStoreWithoutFaults(StoreContract):
    persistent = False

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        return lambda: FailingStore(MemoryStore())


class TestComposedFromToml(StoreContract):
    """``failing -> slow -> sqlite`` built from TOML by the real plugins and builder."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], Store]:
        table = tomllib.loads(
            f"""
            [store]
            plugin = "failing"
            seed = 1
            [store.inner]
            plugin = "slow"
            jitter_ms = 0.3
            seed = 2
            operations = ["writes"]
            [store.inner.inner]
            plugin = "sqlite"
            path = '{tmp_path / "features.db"}'
            """
        )["store"]

        def make() -> Store:
            store = builder().build(table)
            assert store.name == "failing(slow(sqlite))"
            return store

        return make


# -- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"plugin": "failing", "error_rate": 1.5}, "between 0 and 1"),
        ({"plugin": "failing", "error_rate": -0.1}, "must be >= 0"),
        ({"plugin": "failing", "error_rate": True}, "must be a number"),
        ({"plugin": "failing", "seed": "7"}, "'seed' .* must be an integer"),
        ({"plugin": "failing", "every_nth": 1.5}, "must be an integer"),
        ({"plugin": "failing", "operations": ["hass"]}, "unknown operation 'hass'"),
        ({"plugin": "failing", "operations": []}, "at least one operation"),
        ({"plugin": "failing", "error": "boom"}, "unavailable, timeout"),
        ({"plugin": "failing", "outage_after_seconds": 3}, "needs outage_seconds"),
        ({"plugin": "failing", "outage": False, "outage_seconds": 3}, "cannot have"),
        ({"plugin": "failing", "errorrate": 0.2}, "unknown option.*'errorrate'"),
        ({"plugin": "slow", "delay_ms": -1}, "must be >= 0"),
        ({"plugin": "slow", "stall": "yes"}, "true or false"),
        ({"plugin": "slow", "delayms": 3}, "unknown option.*'delayms'"),
    ],
)
def test_bad_options_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        builder().build({**table, "inner": "memory"})


def test_a_wrapper_needs_an_inner_store() -> None:
    with pytest.raises(ConfigError, match=r"wraps another store and needs \[store.inner\]"):
        builder().build({"plugin": "failing"})


def test_operations_take_groups_aliases_and_strings() -> None:
    assert parse_operations(["writes"], "x") == {
        "add",
        "remove",
        "define",
        "archive",
        "add_many",
        "remove_many",
        "set_features",
    }
    assert parse_operations("has, features_of", "x") == {"has", "features_of_many"}
    assert "ping" in parse_operations(["reads"], "x")
    assert "snapshot_page" in parse_operations(["reads"], "x")
    assert len(parse_operations(["all"], "x")) == 22  # with snapshot_page and trim_changes


# -- the failing store ------------------------------------------------------------------


async def outcomes(store: Store, calls: int) -> list[str]:
    """``ok`` or the injected error's class name, per ``has`` call."""
    seen = []
    for _ in range(calls):
        try:
            await store.has(R, "f")
            seen.append("ok")
        except StoreUnavailable as exc:
            seen.append(
                type(exc).__name__ if exc.injected and "injected fault" in str(exc) else "?"
            )
    return seen


async def test_error_rate_is_reproducible_with_a_seed() -> None:
    def make() -> FailingStore:
        return FailingStore(MemoryStore(), FailingSettings(error_rate=0.3, seed=11))

    first, second = await outcomes(make(), 200), await outcomes(make(), 200)
    assert first == second
    assert 30 < first.count("StoreUnavailable") < 90
    other = await outcomes(FailingStore(MemoryStore(), FailingSettings(0.3, seed=12)), 200)
    assert other != first


async def test_every_nth_and_operations() -> None:
    store = FailingStore(MemoryStore(), FailingSettings(every_nth=3, operations=frozenset({"add"})))
    assert await outcomes(store, 10) == ["ok"] * 10  # reads are not selected
    results = []
    for i in range(9):
        try:
            await store.add(Resource("app", str(i)), "f", actor=None)
            results.append("ok")
        except StoreUnavailable:
            results.append("refused")
    assert results == ["ok", "ok", "refused"] * 3
    assert store.fault_state()["injected"]["every_nth"] == 3
    # A refused write did not happen.
    assert await store.has(Resource("app", "2"), "f") is False
    assert await store.revision() == 6


async def test_error_kind_timeout() -> None:
    store = FailingStore(MemoryStore(), FailingSettings(error_rate=1.0, error="timeout"))
    with pytest.raises(StoreTimeout, match="injected fault") as caught:
        await store.revision()
    assert caught.value.injected


async def test_outage_window_opens_and_closes_on_the_clock() -> None:
    now = [100.0]
    store = FailingStore(MemoryStore(), outage=Outage(after=10, seconds=5), clock=lambda: now[0])
    await store.open()
    assert await outcomes(store, 1) == ["ok"]
    assert store.fault_state()["outage"] == {
        "active": False,
        "remaining_seconds": 15.0,
        "starts_in_seconds": 10.0,
    }
    now[0] = 110.0
    assert await outcomes(store, 2) == ["StoreUnavailable"] * 2
    assert store.fault_state()["outage"]["active"] is True
    now[0] = 115.0
    assert await outcomes(store, 1) == ["ok"]
    assert store.fault_state()["injected"]["outage"] == 2


async def test_runtime_changes_apply_all_or_nothing() -> None:
    store = FailingStore(MemoryStore())
    store.change_faults({"outage": True})
    assert await outcomes(store, 1) == ["StoreUnavailable"]
    assert store.fault_state()["outage"] == {"active": True, "remaining_seconds": None}
    with pytest.raises(ConfigError, match="'error_rate'"):
        store.change_faults({"outage": False, "error_rate": 7})
    assert store.outage_active(), "a refused change must change nothing"
    store.change_faults({"outage": False, "error_rate": 0.5, "seed": 3})
    assert not store.outage_active()
    assert store.fault_state()["error_rate"] == 0.5
    with pytest.raises(ConfigError, match="unknown option"):
        store.change_faults({"delay_ms": 5})


async def test_overlapping_writes_conflict_and_never_apply() -> None:
    store = FailingStore(
        SlowStore(MemoryStore(), SlowSettings(delay_ms=5)),
        FailingSettings(concurrent_writes=True),
    )
    results = await asyncio.gather(
        *(store.add(Resource("app", str(i)), "f", actor=None) for i in range(10)),
        return_exceptions=True,
    )
    assert results[0] == WriteResult(changed=True, revision=1)
    conflicts = [r for r in results if isinstance(r, StoreConflict)]
    assert len(conflicts) == 9
    assert all(c.injected and "overlapped" in str(c) for c in conflicts)
    assert await store.revision() == 1
    assert [c.resource.id for c in await store.changes_since(0, limit=10)] == ["0"]
    # Reads never conflict, and sequential writes are fine.
    await asyncio.gather(store.has(R, "f"), store.add(R, "f", actor=None), store.has(R, "f"))
    assert store.fault_state()["writes_in_flight"] == 0


# -- the slow store ---------------------------------------------------------------------


async def test_stall_holds_calls_until_switched_off() -> None:
    store = SlowStore(MemoryStore(), SlowSettings(stall=True, operations=frozenset({"has"})))
    pending = asyncio.ensure_future(store.has(R, "f"))
    assert await store.revision() == 0  # not selected: not stalled
    await asyncio.sleep(0.01)
    assert not pending.done()
    store.change_faults({"stall": False})
    assert await asyncio.wait_for(pending, 1) is False
    assert store.fault_state()["stalled"] == 1


async def test_fault_controls_are_found_along_the_chain() -> None:
    store = builder().build(
        {
            "plugin": "failing",
            "inner": {"plugin": "slow", "inner": {"plugin": "failing", "inner": "memory"}},
        }
    )
    found = [(path, control.plugin) for path, control in fault_controls(store)]
    assert found == [
        ("store", "failing"),
        ("store.inner", "slow"),
        ("store.inner.inner", "failing"),
    ]
    assert fault_controls(MemoryStore()) == []
