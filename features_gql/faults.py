"""Fault injection support shared by the core and the fault-injection plugins.

The ``slow`` and ``failing`` stores live in ``features_gql_plugins``; what the admin
endpoint and the command line need to know about them lives here (the core itself
only knows the neutral ``injected_delay`` mark of ``features_gql.stores.base``):

* the operation names and groups their ``operations`` option accepts;
* :class:`FaultControl`, the protocol through which the admin endpoint changes the
  faults of a running store, and :func:`fault_controls`, which finds them;
* :func:`wrap_store`, the ``--fault`` / ``--latency`` command-line shorthand;
* :class:`FaultStore`, what the two stores share: their settings, a random source seeded
  by them, the count of the calls they select, the start-up warning.
"""

from __future__ import annotations

import logging
import random
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from features_gql.config import DEFAULT_STORE
from features_gql.errors import ConfigError
from features_gql.stores.base import OPERATIONS, Store, WrappingStore
from features_gql.stores.operations import Kind, Operation
from features_gql.stores.options import StoreOptions

log = logging.getLogger("features_gql.faults")

#: Store operations by kind, as :class:`~features_gql.stores.Store` declares them.
READS = tuple(op.name for op in OPERATIONS if op.kind is Kind.READ)
WRITES = tuple(op.name for op in OPERATIONS if op.kind is Kind.WRITE)
#: Change-log retention trims: only ``all`` (or the name itself) selects them.
MAINTENANCE = tuple(op.name for op in OPERATIONS if op.kind is Kind.MAINTENANCE)
ALL_OPERATIONS = frozenset(op.name for op in OPERATIONS)
OPERATION_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(op.name for op in OPERATIONS),
    "reads": READS,
    "writes": WRITES,
}
#: Operation events name some operations otherwise (``features_of``); accept both.
OPERATION_ALIASES = {op.event: op.name for op in OPERATIONS if op.event != op.name}


def parse_operations(value: object, where: str, key: str = "operations") -> frozenset[str]:
    """Operation names and groups (a list, or one comma-separated string) as a set."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: {key} must be a list of operation names, got {value!r}")
    if not value:
        raise ConfigError(f"{where}: {key} must name at least one operation")
    selected: set[str] = set()
    for item in value:
        name = OPERATION_ALIASES.get(item, item)
        if name in OPERATION_GROUPS:
            selected.update(OPERATION_GROUPS[name])
        elif name in ALL_OPERATIONS:
            selected.add(name)
        else:
            known = ", ".join([*OPERATION_GROUPS, *READS, *WRITES, *OPERATION_ALIASES])
            raise ConfigError(f"{where}: {key} has unknown operation {item!r}; known: {known}")
    return frozenset(selected)


def read_operations(options: StoreOptions, default: frozenset[str]) -> frozenset[str]:
    raw = options.raw("operations")
    if raw is None:
        return default
    return parse_operations(raw, f"{options.where} (store {options.plugin!r})")


def read_seed(options: StoreOptions, default: int | None) -> int | None:
    raw = options.raw("seed")
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(
            f"{options.where}: option 'seed' of store {options.plugin!r} must be an integer, "
            f"got {raw!r}"
        )
    return raw


@runtime_checkable
class FaultControl(Protocol):
    """A store whose faults can be inspected and changed while it runs.

    The admin endpoint (``/admin/faults``) finds these stores in the configured chain
    with :func:`fault_controls`.
    """

    #: The plugin name, ``failing`` or ``slow``.
    plugin: str
    name: str

    def fault_state(self) -> dict[str, Any]:
        """The current settings and counters, as JSON-ready values."""

    def change_faults(self, changes: Mapping[str, Any]) -> None:
        """Apply new settings (option names as in TOML); raise ConfigError if invalid.

        Either every change applies or none does.
        """


def fault_controls(store: Store) -> list[tuple[str, FaultControl]]:
    """Every controllable store in the chain, outermost first, with its config path."""
    found: list[tuple[str, FaultControl]] = []
    path = "store"
    current: Store | None = store
    while current is not None:
        if isinstance(current, FaultControl):
            found.append((path, current))
        current = current.inner if isinstance(current, WrappingStore) else None
        path += ".inner"
    return found


# -- the command-line shorthand --------------------------------------------------------

_KEY = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED = ("plugin", "inner")


def parse_assignments(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``["error_rate=0.2", "operations=writes"]`` as options.

    Values are read as TOML values (``0.2``, ``true``, ``["add", "remove"]``), so the
    shorthand takes exactly what a ``[store]`` table takes; anything that is not a
    TOML value is a string.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or _KEY.fullmatch(key) is None:
            raise ConfigError(f"{flag} takes KEY=VALUE (e.g. {flag} error_rate=0.2), got {pair!r}")
        if key in _RESERVED:
            raise ConfigError(f"{flag} cannot set {key!r}; use --store or a [store] table")
        try:
            value: Any = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        options[key] = value
    return options


def wrap_store(
    store: Mapping[str, Any] | str | None,
    *,
    fault: Sequence[str] | None = None,
    latency: Sequence[str] | None = None,
) -> Mapping[str, Any] | str | None:
    """Wrap a store setting in ``failing`` (``--fault`` options) over ``slow`` (``--latency``).

    ``failing`` goes outside ``slow``, so a refused call answers at once and a slow
    write stays in flight long enough for ``concurrent_writes`` to see overlaps.
    """
    if not fault and not latency:
        return store
    inner: Mapping[str, Any] | str
    inner = dict(DEFAULT_STORE) if store is None else store
    if latency:
        inner = {"plugin": "slow", **parse_assignments(latency, "--latency"), "inner": inner}
    if fault:
        inner = {"plugin": "failing", **parse_assignments(fault, "--fault"), "inner": inner}
    return inner


def describe(settings: object) -> str:
    """``delay_ms=30 operations=writes``: the settings of a fault store that are not default."""
    defaults = type(settings)()
    parts = []
    for key, value in vars(settings).items():
        if value == getattr(defaults, key):
            continue
        if isinstance(value, frozenset):
            groups = [g for g, ops in OPERATION_GROUPS.items() if value == frozenset(ops)]
            value = groups[0] if groups else ",".join(sorted(value))
        parts.append(f"{key}={value}")
    return " ".join(parts) or "no faults"


# -- the fault-injection stores ---------------------------------------------------------


class FaultSettings(Protocol):
    """What every fault store's settings hold (a frozen dataclass of them)."""

    @property
    def seed(self) -> int | None: ...

    @property
    def operations(self) -> frozenset[str]: ...


S = TypeVar("S", bound=FaultSettings)


class FaultStore(WrappingStore, Generic[S]):
    """A fault-injection store (``slow``, ``failing``): it acts in :meth:`around` on the
    calls its settings select, and its settings change while it runs (:class:`FaultControl`)."""

    #: The plugin name, which also names the store: ``slow(sqlite)``.
    plugin: str

    def __init__(self, inner: Store, settings: S) -> None:
        super().__init__(inner)
        self.name = f"{self.plugin}({inner.name})"
        self.settings = settings
        self.rng = random.Random(settings.seed)
        #: The calls the settings selected.
        self.calls = 0

    def selects(self, op: Operation) -> bool:
        """Whether the faults apply to this call of ``op`` (then it is counted)."""
        if op.name not in self.settings.operations:
            return False
        self.calls += 1
        return True

    def fault_state(self) -> dict[str, Any]:
        """The settings, then the counters (see :class:`FaultControl`)."""
        settings = {
            key: sorted(value) if isinstance(value, frozenset) else value
            for key, value in vars(self.settings).items()
        }
        return {**settings, "calls": self.calls, **self.counters()}

    def counters(self) -> dict[str, Any]:
        """What the store counts beside the calls it selected."""
        return {}

    def apply(self, settings: S, changes: Mapping[str, Any]) -> None:
        """Make ``settings`` (read from ``changes``) the store's own."""
        self.settings = settings
        if "seed" in changes:
            self.rng = random.Random(settings.seed)

    async def open(self) -> None:
        await super().open()
        self.opened()
        log.warning("fault injection is on: %s (%s)", self.name, self.describe_faults())

    def opened(self) -> None:
        """Called once the inner store is open (the clock of scheduled faults starts)."""

    def describe_faults(self) -> str:
        return describe(self.settings)
