"""The ``slow`` store: a wrapper that adds latency to another store, or never answers.

    [store]
    plugin = "slow"
    delay_ms = 30          # fixed latency added to every selected call
    jitter_ms = 20         # plus a uniform random 0..jitter_ms (seeded with seed)
    seed = 7
    operations = ["writes"]  # or "reads", "all", or names: has, add, check_many...
    stall = false          # true: selected calls wait until stall is switched off
    [store.inner]
    plugin = "sqlite"

The delay comes before the call reaches the inner store, so a call that misses its
deadline never took effect. A delayed call marks its task (``injected_delay``), so a
deadline it makes the API miss is reported as ``injected``. The settings can be changed
while the service runs (``POST /admin/faults``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from features_gql import hookimpl
from features_gql.faults import ALL_OPERATIONS, FaultStore, read_operations, read_seed
from features_gql.stores import Operation, Store, StoreBuilder, StoreOptions, StoreRegistry
from features_gql.stores.base import delaying_on_purpose

T = TypeVar("T")


@dataclass(frozen=True)
class SlowSettings:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int | None = None
    operations: frozenset[str] = ALL_OPERATIONS
    stall: bool = False

    @classmethod
    def read(cls, options: StoreOptions, base: SlowSettings | None = None) -> SlowSettings:
        """Settings from ``options``; options not given keep their value in ``base``."""
        base = base or cls()
        return cls(
            delay_ms=options.get_float("delay_ms", base.delay_ms, minimum=0),
            jitter_ms=options.get_float("jitter_ms", base.jitter_ms, minimum=0),
            seed=read_seed(options, base.seed),
            operations=read_operations(options, base.operations),
            stall=options.get_bool("stall", base.stall),
        )


class SlowStore(FaultStore[SlowSettings]):
    """Delays the selected operations of ``inner``; with ``stall``, holds them indefinitely."""

    plugin = "slow"

    def __init__(self, inner: Store, settings: SlowSettings | None = None) -> None:
        super().__init__(inner, settings or SlowSettings())
        #: Set while not stalling; stalled calls wait on it.
        self._released = asyncio.Event()
        if not self.settings.stall:
            self._released.set()
        self.delayed = 0
        self.stalled = 0

    # -- fault control ----------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {"delayed": self.delayed, "stalled": self.stalled}

    def change_faults(self, changes: Mapping[str, Any]) -> None:
        options = StoreOptions(self.plugin, changes, "admin")
        settings = SlowSettings.read(options, self.settings)
        options.check_all_used()
        self.apply(settings, changes)
        if settings.stall:
            self._released.clear()
        else:
            # Calls stalled so far carry on (unless their deadline already ended them).
            self._released.set()

    # -- the delay --------------------------------------------------------------------

    async def around(self, op: Operation, call: Callable[[], Awaitable[T]]) -> T:
        if self.selects(op):
            await self._delay()
        return await call()

    async def _delay(self) -> None:
        settings = self.settings
        seconds = settings.delay_ms / 1000
        if settings.jitter_ms:
            seconds += self.rng.uniform(0, settings.jitter_ms) / 1000
        if not settings.stall and seconds <= 0:
            return
        with delaying_on_purpose():
            if settings.stall:
                self.stalled += 1
                await self._released.wait()
            if seconds > 0:
                self.delayed += 1
                await asyncio.sleep(seconds)


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    settings = SlowSettings.read(options)
    return SlowStore(builder.inner(options), settings)


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "slow",
        _factory,
        description="Fault injection: wraps another store and adds latency "
        "(delay_ms, jitter_ms, seed, operations) or stalls it (stall = true).",
    )
