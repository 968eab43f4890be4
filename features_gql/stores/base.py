"""The store protocol. A plugin author implements this class in one module.

Inputs reaching a store are already validated by the core. Stores raise
:class:`~features_gql.errors.StoreError` subclasses for expected failures; the
core times every call, applies the deadline and reports an operation event.

Each operation is declared here, once, by its ``@operation(kind)`` decorator
(:mod:`features_gql.stores.operations`): :data:`OPERATIONS` lists them, and wrappers,
fault injection and the API derive what they need from it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from features_gql.domain import (
    Assignment,
    BulkResult,
    ChangeEvent,
    DefinitionResult,
    FeatureFilter,
    FeatureInfo,
    FeatureSpec,
    HistoryQuery,
    Resource,
    ResourceTypeCount,
    SetResult,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import ChangesTrimmed, SnapshotsUnsupported, StoreUnsupported
from features_gql.stores.operations import (
    DECLARATION,
    Kind,
    M,
    Operation,
    declaration,
    declared_operations,
    operation,
)

T = TypeVar("T")

#: Set while a store delays a call on purpose (fault injection). The task that awaits
#: the store sees it, so FeaturesAPI can report a deadline such a delay made it miss as
#: ``injected``, and a drill is never mistaken for an outage.
injected_delay: ContextVar[bool] = ContextVar("features_gql_injected_delay", default=False)


@contextmanager
def delaying_on_purpose() -> Iterator[None]:
    """Mark the current task as waiting on an injected delay.

    When the wait is cancelled (the deadline struck), the mark deliberately stays set:
    the caller that applied the deadline reads it and clears it.
    """
    token = injected_delay.set(True)
    yield
    injected_delay.reset(token)


_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):[^@/]*@", re.I)


def redact_url(value: object) -> str:
    """``value`` as it may appear in logs: the password of any URL in it replaced by ***."""
    return _SECRET_IN_URL.sub(r"\g<scheme>\g<user>:***@", str(value))


def check_not_trimmed(after: int, first: int | None, *, trimmed_through: int | None = None) -> None:
    """The rule of every store's ``changes_since``: a change log that holds nothing between
    ``after`` and the first revision it holds after it (``first``; None: none) was
    trimmed, and says so with :class:`~features_gql.errors.ChangesTrimmed` rather than
    skip the gap in silence.

    A store whose revisions are dense passes nothing more: any such hole is a trim. One
    that can leave holes of its own (MongoDB without transactions) passes the revision it
    last trimmed through: only a hole below it is a trim.
    """
    if first is None or first <= after + 1:
        return
    if trimmed_through is None or after < trimmed_through:
        raise ChangesTrimmed(after, first)


class Store(abc.ABC):
    """Async storage for feature assignments and their change log.

    The methods marked ``@operation`` are the operations (:data:`OPERATIONS`); the others
    are the life cycle (:data:`LIFECYCLE`).
    """

    #: A short label for logs and metrics (``memory``, ``sqlite``, ``failing(sqlite)``).
    name: str = "store"
    #: Whether several processes see the same data (``serve --workers N`` needs it).
    shared_between_processes: bool = True
    #: True only for a store whose every method returns without ever suspending (pure
    #: in-process data). A deadline can only fire at a suspension, so the core skips
    #: arming one for such a store; a wrapper never claims it, and a subclass that
    #: awaits anything must set it back to False.
    never_suspends: bool = False

    def describe(self) -> str:
        """Where the data is, for the start-up line and logs (no secrets)."""
        return self.name

    async def open(self) -> None:  # noqa: B027 - optional hook, most stores need it
        """Connect, create tables or indexes. Called once before any other method."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Called once; the store is not used afterwards."""

    @operation(Kind.READ)
    async def ping(self) -> None:
        """Raise a StoreError if the store cannot answer; used by readiness probes."""
        await self.revision()

    @operation(Kind.READ)
    @abc.abstractmethod
    async def has(self, resource: Resource, feature: str) -> bool:
        """Whether ``resource`` has ``feature``."""

    @operation(Kind.WRITE, mutation="addFeature")
    @abc.abstractmethod
    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        """Give ``resource`` the feature. Idempotent: adding twice changes nothing.

        A change that takes effect is appended to the change log, atomically with the
        change itself, under the next revision. An add that changes nothing returns the
        current revision and logs nothing.
        """

    @operation(Kind.WRITE, mutation="removeFeature")
    @abc.abstractmethod
    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        """Take the feature away. Removing something absent changes nothing."""

    @operation(Kind.READ, event="features_of")
    @abc.abstractmethod
    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        """The features of each resource, sorted, in the order of ``resources``.

        One round trip for the whole batch: GraphQL batches every ``features``
        field of a request into a single call.
        """

    @operation(Kind.READ)
    @abc.abstractmethod
    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        """Answer many ``has`` questions in one round trip, in the order asked."""

    @operation(Kind.READ)
    @abc.abstractmethod
    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        """Up to ``limit`` resources having ``feature``, ordered by (type, id).

        Order compares strings by Unicode code point (the order of their UTF-8 bytes).
        ``after`` excludes everything up to and including that resource; ``type``
        keeps only resources of that type.
        """

    @operation(Kind.READ)
    @abc.abstractmethod
    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        """Up to ``limit`` change events with a revision greater than ``revision``, ascending."""

    @operation(Kind.READ)
    @abc.abstractmethod
    async def revision(self) -> int:
        """The revision of the latest change (0 for a store that never changed)."""

    # -- catalog, listings, history and bulk ------------------------------------------
    #
    # Optional: a store that does not implement these leaves ``supports_catalog`` False,
    # and each raises StoreUnsupported. The bundled stores implement them all. Every
    # write below logs each change it makes under its own revision, like ``add``.

    #: Whether the store implements the catalog, listing, history and bulk operations.
    supports_catalog: bool = False

    def _unsupported(self, operation: str) -> StoreUnsupported:
        return StoreUnsupported(f"the {self.name} store does not implement {operation}")

    @operation(Kind.WRITE, mutation="defineFeature")
    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        """Create or update a feature's definition (see :meth:`FeatureSpec.apply`); logged
        as a ``define`` change when it changes anything."""
        raise self._unsupported("define")

    @operation(Kind.WRITE, mutation="archiveFeature")
    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        """Retire a defined feature (logged as ``archive``). Archiving a feature that is
        not defined, or already archived, changes nothing."""
        raise self._unsupported("archive")

    @operation(Kind.READ)
    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        """What the catalog knows of each name, in order (count 0 and no definition for
        a feature nobody has and nobody defined). One round trip."""
        raise self._unsupported("feature_infos")

    @operation(Kind.READ)
    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        """Up to ``limit`` features that are defined or assigned and that ``filter``
        keeps (:meth:`FeatureFilter.keeps`), ordered by name, after the name ``after``."""
        raise self._unsupported("list_features")

    @operation(Kind.READ)
    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        """Up to ``limit`` resource types that some resource with a feature has, ordered
        by name, after the name ``after``, each with its number of such resources."""
        raise self._unsupported("resource_types")

    @operation(Kind.READ)
    async def resource_count(self, type: str) -> int:
        """How many resources of ``type`` have at least one feature (a stored count)."""
        raise self._unsupported("resource_count")

    @operation(Kind.READ)
    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        """Up to ``limit`` resources of ``type`` having at least one feature, ordered by
        id (code point order), after the id ``after``."""
        raise self._unsupported("list_resources")

    @operation(Kind.READ)
    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        """Up to ``limit`` change events that ``query`` keeps, newest first, with a
        revision below ``before`` (all when None). Served by indexes, never a scan."""
        raise self._unsupported("history")

    @operation(Kind.WRITE, mutation="addFeatures")
    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        """Add every assignment, all or nothing where the store can, in one round trip.

        Each item that changes is logged under its own revision, in the order given.
        With ``require_defined``, an item whose feature is not defined, or archived,
        refuses the whole call (``BulkResult.refused``) and nothing is applied.
        """
        raise self._unsupported("add_many")

    @operation(Kind.WRITE, mutation="removeFeatures")
    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        """Remove every assignment, like :meth:`add_many`."""
        raise self._unsupported("remove_many")

    @operation(Kind.WRITE, mutation="setFeatures")
    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        """Make ``features`` the resource's features: remove the others, then add the
        missing ones (each sorted, each change logged under its own revision), in one
        round trip, all or nothing where the store can."""
        raise self._unsupported("set_features")

    # -- snapshots and feed ---------------------------------------------------------------
    # Replicas (LocalReplica, edges) load a snapshot page by page, then follow the change
    # log from the revision of the first page. Not abstract, so a store written before
    # snapshots keeps working: replicas then replay its whole change log instead.

    @operation(Kind.READ)
    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        """Up to ``limit`` assignments after ``after`` (all when None), ordered by
        (type, id, feature) comparing strings by code point, with the revision the page
        reflects: every change up to it is in the page (read that revision before the
        rows, or in the same consistent read as them).

        Raise :class:`~features_gql.errors.SnapshotsUnsupported` if the store cannot.
        """
        raise SnapshotsUnsupported(f"store {self.name!r} does not implement snapshots")

    @operation(Kind.MAINTENANCE)
    async def trim_changes(self, through: int) -> int:
        """Delete the change events with a revision up to ``through``, always keeping
        the latest one; return how many were deleted. After a trim, ``changes_since``
        of a revision before the first one kept raises
        :class:`~features_gql.errors.ChangesTrimmed` (never a silent gap).
        """
        raise SnapshotsUnsupported(f"store {self.name!r} does not implement change-log trimming")

    # -- pushed changes (optional) ----------------------------------------------------------
    # Readers of the change log in other processes poll it; a store whose database can
    # tell them when a change commits (PostgreSQL's LISTEN/NOTIFY) lets them wake at once.

    async def watch(self, changed: Callable[[int, bool], None]) -> bool:
        """Start calling ``changed(revision, catalog)`` on this event loop whenever a change
        commits, whoever wrote it (any process): ``revision`` is the latest committed, and
        ``catalog`` whether the commit holds catalog changes (define, archive). A hint
        only: readers still read the change log, and keep polling it slowly in case a
        notice is lost. Stops at :meth:`close`. Returns False when the store cannot push
        (the default): readers then poll as usual.
        """
        return False

    @property
    def watching(self) -> bool:
        """Whether pushed notices arrive now (False while the connection that carries
        them is down: readers then poll at their usual pace)."""
        return False


#: Every operation of the protocol, in the order ``Store`` declares them.
OPERATIONS: tuple[Operation, ...] = declared_operations(Store)
#: The operations by method name.
OPERATION_NAMED: Mapping[str, Operation] = {op.name: op for op in OPERATIONS}
#: The members of ``Store`` that are not operations: its life cycle and what it says of
#: itself. A wrapper delegates them as they are; nothing else is public on a store.
LIFECYCLE = frozenset({"describe", "open", "close", "watch", "watching"})
#: The data attributes a store sets (see :class:`Store`).
ATTRIBUTES = frozenset({"name", "shared_between_processes", "never_suspends", "supports_catalog"})


def through(method: M) -> M:
    """``method`` of :class:`WrappingStore`: the same call on ``inner``, through
    :meth:`WrappingStore.around`. Typed as ``method`` is, so mypy sees the signature."""
    op = declaration(method)
    if op is None:
        raise TypeError(f"{method.__qualname__} is not a declared store operation")
    name = op.name

    async def intercepted(self: WrappingStore, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.inner, name)
        return await self.around(op, lambda: call(*args, **kwargs))

    intercepted.__name__ = name
    intercepted.__qualname__ = f"WrappingStore.{name}"
    intercepted.__doc__ = method.__doc__
    setattr(intercepted, DECLARATION, op)
    return cast(M, intercepted)


class WrappingStore(Store):
    """A store that holds another store and passes every call to it (slow, failing, an
    edge's copy...).

    Every operation goes through one seam, :meth:`around`: a subclass overrides it to
    act on every call, or on the calls of some kind (``op.kind``), and overrides an
    operation's method only for what is truly its own.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.name = f"{type(self).__name__.lower()}({inner.name})"
        self.shared_between_processes = inner.shared_between_processes
        self.supports_catalog = inner.supports_catalog

    async def around(self, op: Operation, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call``, the call of ``op`` on ``inner``; what a wrapper adds goes here."""
        return await call()

    def describe(self) -> str:
        return f"{self.name.split('(')[0]} over {self.inner.describe()}"

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def watch(self, changed: Callable[[int, bool], None]) -> bool:
        return await self.inner.watch(changed)

    @property
    def watching(self) -> bool:
        return self.inner.watching

    # One line an operation (tests/test_store_operations.py fails when one is missing).
    ping = through(Store.ping)
    has = through(Store.has)
    add = through(Store.add)
    remove = through(Store.remove)
    features_of_many = through(Store.features_of_many)
    check_many = through(Store.check_many)
    resources_with = through(Store.resources_with)
    changes_since = through(Store.changes_since)
    revision = through(Store.revision)
    define = through(Store.define)
    archive = through(Store.archive)
    feature_infos = through(Store.feature_infos)
    list_features = through(Store.list_features)
    resource_types = through(Store.resource_types)
    resource_count = through(Store.resource_count)
    list_resources = through(Store.list_resources)
    history = through(Store.history)
    add_many = through(Store.add_many)
    remove_many = through(Store.remove_many)
    set_features = through(Store.set_features)
    snapshot_page = through(Store.snapshot_page)
    trim_changes = through(Store.trim_changes)
