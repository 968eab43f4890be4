"""The ``failing`` store: a wrapper that makes another store fail on purpose.

    [store]
    plugin = "failing"
    error_rate = 0.2           # fail this fraction of selected calls (seeded with seed)
    seed = 7
    every_nth = 0              # fail every Nth selected call (0: never)
    operations = ["all"]       # or "reads", "writes", or names: has, add, check_many...
    concurrent_writes = false  # true: a write overlapping another in-flight write conflicts
    outage_seconds = 0         # fail every selected call for this long after start
    outage_after_seconds = 0   # ...starting this long after start
    outage = false             # true: fail every selected call until switched off
    error = "unavailable"      # or "timeout": the error the faults above raise
    [store.inner]
    plugin = "sqlite"

A refused call never reaches the inner store, so a refused write did not happen.
Every fault is a :class:`~features_gql.errors.StoreError` with ``injected=True`` and a
message that says it was injected, so operation events, logs, metrics and the GraphQL
error (``extensions.injected``) all tell a drill from an outage. The settings can be
changed while the service runs (``POST /admin/faults``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from features_gql import hookimpl
from features_gql.errors import (
    ConfigError,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.faults import ALL_OPERATIONS, FaultStore, read_operations, read_seed
from features_gql.stores import Operation, Store, StoreBuilder, StoreOptions, StoreRegistry

T = TypeVar("T")

ErrorKind = Literal["unavailable", "timeout"]
_ERRORS: dict[str, type[StoreError]] = {"unavailable": StoreUnavailable, "timeout": StoreTimeout}
_OUTAGE_KEYS = ("outage", "outage_seconds", "outage_after_seconds")
#: The reasons a call is refused, as counted in ``fault_state()["injected"]``.
REASONS = ("outage", "every_nth", "error_rate", "concurrent_writes")


@dataclass(frozen=True)
class FailingSettings:
    error_rate: float = 0.0
    seed: int | None = None
    every_nth: int = 0
    operations: frozenset[str] = ALL_OPERATIONS
    concurrent_writes: bool = False
    error: ErrorKind = "unavailable"

    @classmethod
    def read(cls, options: StoreOptions, base: FailingSettings | None = None) -> FailingSettings:
        """Settings from ``options``; options not given keep their value in ``base``."""
        base = base or cls()
        error_rate = options.get_float("error_rate", base.error_rate, minimum=0)
        if error_rate > 1:
            raise ConfigError(
                f"{options.where}: option 'error_rate' of store {options.plugin!r} is a "
                f"probability between 0 and 1, got {error_rate}"
            )
        error = options.get_str("error", base.error)
        if error not in _ERRORS:
            raise ConfigError(
                f"{options.where}: option 'error' of store {options.plugin!r} must be one of "
                f"{', '.join(_ERRORS)}, got {error!r}"
            )
        return cls(
            error_rate=error_rate,
            seed=read_seed(options, base.seed),
            every_nth=options.get_int("every_nth", base.every_nth, minimum=0),
            operations=read_operations(options, base.operations),
            concurrent_writes=options.get_bool("concurrent_writes", base.concurrent_writes),
            error=cast(ErrorKind, error),
        )


@dataclass(frozen=True)
class Outage:
    """An outage that starts ``after`` seconds from when it is applied and lasts ``seconds``."""

    after: float = 0.0
    seconds: float = math.inf

    @classmethod
    def read(cls, options: StoreOptions) -> tuple[bool, Outage | None]:
        """Whether the options speak of an outage, and the outage they ask for."""
        given = {key for key in _OUTAGE_KEYS if options.raw(key) is not None}
        if not given:
            return False, None
        where = f"{options.where} (store {options.plugin!r})"
        on = options.get_bool("outage", True)
        seconds = options.get_float("outage_seconds", math.inf, minimum=0)
        after = options.get_float("outage_after_seconds", 0.0, minimum=0)
        if not on:
            if given != {"outage"}:
                raise ConfigError(f"{where}: outage = false cannot have outage_seconds or *_after")
            return True, None
        if given == {"outage_after_seconds"}:
            raise ConfigError(
                f"{where}: outage_after_seconds needs outage_seconds or outage = true"
            )
        return True, cls(after, seconds)


class FailingStore(FaultStore[FailingSettings]):
    """Refuses selected calls of ``inner`` by probability, by count, in an outage window,
    or (``concurrent_writes``) when a write overlaps another write in flight."""

    plugin = "failing"

    def __init__(
        self,
        inner: Store,
        settings: FailingSettings | None = None,
        *,
        outage: Outage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner, settings or FailingSettings())
        self._clock = clock
        self._configured_outage = outage
        self._window = self._schedule(outage)
        self._writes_in_flight = 0
        self.injected = dict.fromkeys(REASONS, 0)

    # -- fault control ----------------------------------------------------------------

    def _schedule(self, outage: Outage | None) -> tuple[float, float] | None:
        if outage is None:
            return None
        start = self._clock() + outage.after
        return start, start + outage.seconds

    def outage_active(self) -> bool:
        return self._window is not None and self._window[0] <= self._clock() < self._window[1]

    def counters(self) -> dict[str, Any]:
        return {
            "outage": self._outage_state(),
            "injected": dict(self.injected),
            "writes_in_flight": self._writes_in_flight,
        }

    def _outage_state(self) -> dict[str, Any]:
        if self._window is None:
            return {"active": False}
        now = self._clock()
        start, end = self._window
        if now >= end:
            return {"active": False, "ended_seconds_ago": round(now - end, 3)}
        state: dict[str, Any] = {
            "active": now >= start,
            # null: until switched off.
            "remaining_seconds": None if math.isinf(end) else round(end - now, 3),
        }
        if now < start:
            state["starts_in_seconds"] = round(start - now, 3)
        return state

    def change_faults(self, changes: Mapping[str, Any]) -> None:
        options = StoreOptions(self.plugin, changes, "admin")
        settings = FailingSettings.read(options, self.settings)
        outage_given, outage = Outage.read(options)
        options.check_all_used()
        self.apply(settings, changes)
        if outage_given:
            self._window = self._schedule(outage)

    def describe_faults(self) -> str:
        text = super().describe_faults()
        now = self._clock()
        if self._window is not None and now < self._window[1]:
            start, end = self._window
            if now < start:
                text += f" outage_after_seconds={start - now:.3g}"
            if math.isinf(end):
                text += " outage=until switched off"
            else:
                text += f" outage_seconds={end - max(now, start):.3g}"
        return text

    # -- the faults -------------------------------------------------------------------

    async def around(self, op: Operation, call: Callable[[], Awaitable[T]]) -> T:
        selected = self.selects(op)
        if selected:
            self._refuse(op.name)
        if not op.writes:
            return await call()
        with self._writing(op.name, selected):
            return await call()

    def _refuse(self, op: str) -> None:
        """Raise the injected error if this selected call of ``op`` is to fail."""
        settings = self.settings
        if self.outage_active():
            reason, detail = "outage", "outage"
        elif settings.every_nth and self.calls % settings.every_nth == 0:
            reason, detail = "every_nth", f"every_nth={settings.every_nth}"
        elif settings.error_rate and self.rng.random() < settings.error_rate:
            reason, detail = "error_rate", f"error_rate={settings.error_rate:g}"
        else:
            return
        self.injected[reason] += 1
        raise _ERRORS[settings.error](
            f"injected fault: {self.name} refused {op} ({detail})", injected=True
        )

    @contextmanager
    def _writing(self, op: str, selected: bool) -> Iterator[None]:
        """Refuse a selected write that overlaps another one in flight (any write), when
        asked to."""
        if selected and self._writes_in_flight and self.settings.concurrent_writes:
            self.injected["concurrent_writes"] += 1
            raise StoreConflict(
                f"injected fault: {self.name} refused {op}: it overlapped "
                f"{self._writes_in_flight} write(s) in flight (concurrent_writes)",
                injected=True,
            )
        self._writes_in_flight += 1
        try:
            yield
        finally:
            self._writes_in_flight -= 1

    def opened(self) -> None:
        self._window = self._schedule(self._configured_outage)


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    settings = FailingSettings.read(options)
    _, outage = Outage.read(options)
    return FailingStore(builder.inner(options), settings, outage=outage)


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "failing",
        _factory,
        description="Fault injection: wraps another store and refuses calls "
        "(error_rate, seed, every_nth, operations, concurrent_writes, outage_seconds).",
    )
