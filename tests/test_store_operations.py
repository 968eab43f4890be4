"""The store's operations are declared once (``Store``'s ``@operation`` methods) and every
wrapper intercepts every one of them through ``WrappingStore.around``.

Adding an operation without its delegation in ``WrappingStore``, a public method on
``Store`` that is not declared, or a wrapper that overrides an operation and so bypasses
its own ``around``: each fails here, never silently.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from features_gql import api, faults
from features_gql.edge import EdgeStore
from features_gql.errors import StoreUnavailable, StoreUnsupported
from features_gql.stores import OPERATIONS, Kind, Operation, Store, WrappingStore
from features_gql.stores.base import ATTRIBUTES, LIFECYCLE
from features_gql.stores.operations import declaration
from features_gql.testing.store_contract import OPERATION_CALLS
from features_gql_plugins.failing_store import FailingSettings, FailingStore
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.slow_store import SlowSettings, SlowStore

T = TypeVar("T")
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

#: The bundled wrappers, and the operations each one implements itself rather than
#: through ``around`` (the edge forwards single writes upstream, with their arguments).
WRAPPERS: dict[type[WrappingStore], set[str]] = {
    SlowStore: set(),
    FailingStore: set(),
    EdgeStore: {"add", "remove"},
}


def test_every_public_member_of_store_is_an_operation_or_its_life_cycle() -> None:
    public = {name for name in dir(Store) if not name.startswith("_")}
    declared = {op.name for op in OPERATIONS}
    assert public == declared | LIFECYCLE | ATTRIBUTES
    assert not declared & LIFECYCLE
    assert len(declared) == len(OPERATIONS)


def test_every_declared_operation_is_delegated_through_around() -> None:
    for op in OPERATIONS:
        assert op.name in vars(WrappingStore), f"WrappingStore does not intercept {op.name}"
        assert declaration(vars(WrappingStore)[op.name]) == op


@pytest.mark.parametrize("wrapper", list(WRAPPERS), ids=lambda cls: cls.__name__)
def test_no_wrapper_bypasses_its_seam_unless_it_says_so(wrapper: type[WrappingStore]) -> None:
    seam = vars(WrappingStore)
    bypassing = {op.name for op in OPERATIONS if getattr(wrapper, op.name) is not seam[op.name]}
    assert bypassing == WRAPPERS[wrapper]


def test_the_lists_of_operations_come_from_the_declaration() -> None:
    assert set(faults.READS) | set(faults.WRITES) | set(faults.MAINTENANCE) == {
        op.name for op in OPERATIONS
    }
    assert set(faults.WRITES) == {op.name for op in OPERATIONS if op.kind is Kind.WRITE}
    assert {op.event for op in OPERATIONS if op.writes} == api.WRITES
    assert faults.OPERATION_ALIASES == {"features_of": "features_of_many"}
    assert all(op.mutation for op in OPERATIONS if op.writes)


class Recording(WrappingStore):
    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.seen: list[tuple[Operation, object]] = []

    async def around(self, op: Operation, call: Callable[[], Awaitable[T]]) -> T:
        answer = await call()
        self.seen.append((op, answer))
        return answer


async def test_every_operation_reaches_the_inner_store_through_around() -> None:
    inner = MemoryStore()
    store = Recording(inner)
    await store.open()
    for op in OPERATIONS:
        expected = await OPERATION_CALLS[op.name](MemoryStore())
        answer = await OPERATION_CALLS[op.name](store)
        assert store.seen[-1] == (op, answer)
        # The same answer an untouched store gives (times and revisions aside).
        assert type(answer) is type(expected)
    assert [op for op, _ in store.seen] == list(OPERATIONS)
    assert await inner.revision() == await store.revision() > 0
    await store.close()


async def test_a_failing_store_can_refuse_every_operation() -> None:
    store = FailingStore(MemoryStore(), FailingSettings(every_nth=1))
    await store.open()
    for op in OPERATIONS:
        with pytest.raises(StoreUnavailable, match=f"refused {op.name} ") as refused:
            await OPERATION_CALLS[op.name](store)
        assert refused.value.injected
    assert store.fault_state()["injected"]["every_nth"] == len(OPERATIONS)
    await store.close()


async def test_a_slow_store_can_hold_every_operation() -> None:
    store = SlowStore(MemoryStore(), SlowSettings(stall=True))
    await store.open()
    for op in OPERATIONS:
        call = asyncio.ensure_future(OPERATION_CALLS[op.name](store))
        await asyncio.sleep(0)
        assert not call.done(), f"{op.name} was not held"
        call.cancel()
    assert store.stalled == len(OPERATIONS)
    await store.close()


async def test_an_edge_refuses_every_write_it_does_not_forward() -> None:
    class Client:
        def describe(self) -> str:
            return "http://central/graphql"

    edge: Any = EdgeStore.__new__(EdgeStore)
    WrappingStore.__init__(edge, MemoryStore())
    edge.client = Client()
    for op in OPERATIONS:
        if op.name in WRAPPERS[EdgeStore]:
            continue
        call = OPERATION_CALLS[op.name](edge)
        if op.writes:
            with pytest.raises(StoreUnsupported, match=f"{op.mutation} is not served"):
                await call
        else:
            await call


async def test_the_readme_wrapper_intercepts_every_operation() -> None:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "around" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    store = namespace["CountingStore"](MemoryStore())
    await store.open()
    for op in OPERATIONS:
        await OPERATION_CALLS[op.name](store)
    assert store.calls == dict.fromkeys((op.name for op in OPERATIONS), 1)
