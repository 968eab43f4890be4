"""The feature catalog as flag evaluation reads it: the names of the live features
(defined and not archived), in memory, kept current from the change log.

OFREP and the in-process OpenFeature provider ask the catalog on every evaluation (is
this key a feature? which features exist?), synchronously and in microseconds, so they
cannot read the store each time. A :class:`CatalogView` holds the live names; what
keeps it current depends on where it runs:

- **a service** (:class:`CatalogFollower`): loaded through its :class:`FeaturesAPI` at
  start-up; a define or archive made through that API updates it at once, with no store
  call; over a store other processes write too (SQLite, PostgreSQL, MongoDB: ``--workers
  N``, several instances, the command line), it also reads the change log every
  :data:`POLL_INTERVAL` seconds for their catalog changes, and at once when the store
  pushes a notice of one (PostgreSQL);
- **a** :class:`~features_gql.replica.LocalReplica`: loaded with the replica's snapshot,
  and fed the define and archive changes the replica follows anyway;
- **an edge replica**: loaded from the upstream and fed the upstream's catalog changes by
  :class:`~features_gql.edge.EdgeSync` (the edge's own copy holds assignments only).

**Converging.** A load reads the live names *after* the revision it is taken at, and a
change (``define``: live, ``archive``: not) sets one name to one value. The view keeps,
for each name, the revision of the latest change it recorded, and applies a change only
when it is newer than both the load and that: so changes may arrive twice, or out of
order (a write through this process is told before the change log is read), and the view
still ends where the store is.

**Before it has loaded** (the store was down at start-up), the view does not guess: a
strict view raises :class:`~features_gql.flag_evaluation.CatalogUnavailable` (OFREP
answers 503, retrying is safe) rather than call every flag unknown, and a non-strict one
answers with no defined features (a bulk evaluation then lists only the resource's own).
The follower keeps trying, with backoff, until it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable

from features_gql.api import MAX_PAGE_SIZE, FeaturesAPI
from features_gql.domain import ChangeEvent, DefinitionResult
from features_gql.errors import ChangesTrimmed, StoreError
from features_gql.flag_evaluation import CatalogUnavailable

log = logging.getLogger("features_gql.catalog")

#: Seconds between two reads of the change log for other processes' catalog changes.
POLL_INTERVAL = 1.0
#: Backoff between attempts to load a catalog that could not be read: from MIN_BACKOFF,
#: doubling, up to MAX_BACKOFF, jittered.
MIN_BACKOFF = 0.05
MAX_BACKOFF = 2.0
#: The change operations that change the catalog.
CATALOG_OPS = frozenset({"define", "archive"})

_NOT_LOADED = (
    "The feature catalog has not been loaded yet (the store could not be read), so "
    "whether this flag is defined cannot be told; retrying is safe."
)


class CatalogView:
    """The live feature names (a :class:`~features_gql.flag_evaluation.FlagCatalog`).

    ``strict`` is ``[catalog] strict``: an undefined or archived key is then unknown.
    Lookups read one immutable set, so threads other than the one that updates the view
    (the OpenFeature SDK's) may evaluate while it changes.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._names: frozenset[str] = frozenset()
        self._loaded = False
        #: The revision of the last load: what it reflects.
        self._cut = 0
        #: For each name changed after the cut: the revision of its latest change, and
        #: whether that change left it live.
        self._seen: dict[str, tuple[int, bool]] = {}

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def names(self) -> frozenset[str]:
        """The live features as last known (empty before the first load)."""
        return self._names

    # -- FlagCatalog ----------------------------------------------------------------------

    def is_unknown(self, feature: str) -> bool:
        if not self.strict:
            return False
        if not self._loaded:
            raise CatalogUnavailable(_NOT_LOADED)
        return feature not in self._names

    def defined(self) -> frozenset[str]:
        if not self._loaded and self.strict:
            raise CatalogUnavailable(_NOT_LOADED)
        return self._names

    # -- keeping it current ---------------------------------------------------------------

    def replace(self, revision: int, names: Iterable[str], *, reset: bool = False) -> None:
        """A load: ``names`` are the live features, read after ``revision``.

        Changes recorded after ``revision`` are kept over the load (it may have been read
        before them). ``reset`` forgets every change recorded so far: for a feeder that
        delivers changes in order, or when revisions before now no longer mean anything
        (the store went back to an older backup).
        """
        live = set(names)
        kept: dict[str, tuple[int, bool]] = {}
        if not reset:
            for name, (at, is_live) in self._seen.items():
                if at > revision:
                    kept[name] = (at, is_live)
                    if is_live:
                        live.add(name)
                    else:
                        live.discard(name)
        self._seen = kept
        self._cut = revision
        self._names = frozenset(live)
        self._loaded = True

    def record(self, feature: str, live: bool, revision: int) -> bool:
        """The change at ``revision`` left ``feature`` live (a define) or not (an archive).
        Whether the live names changed; a change the view already reflects is ignored."""
        if revision <= self._cut:
            return False
        known = self._seen.get(feature)
        if known is not None and known[0] >= revision:
            return False
        self._seen[feature] = (revision, live)
        if not self._loaded or (feature in self._names) == live:
            return False
        self._names = self._names | {feature} if live else self._names - {feature}
        return True

    def apply(self, change: ChangeEvent) -> bool:
        """Record ``change`` if it is a catalog change (any other is ignored)."""
        if change.resource is not None or change.op not in CATALOG_OPS:
            return False
        return self.record(change.feature, change.op == "define", change.revision)

    def changed_here(self, result: DefinitionResult) -> None:
        """A :attr:`FeaturesAPI.catalog_listeners` listener: a define or archive made
        through this process's API, known before the change log is read."""
        self.record(result.feature.name, result.feature.live, result.revision)


async def live_features(api: FeaturesAPI) -> list[str]:
    """The names of every live feature (defined, not archived), read page by page."""
    names: list[str] = []
    after: str | None = None
    while True:
        page = await api.list_features(
            defined=True, archived=False, first=MAX_PAGE_SIZE, after=after
        )
        names.extend(info.name for info in page.features)
        if not page.has_next_page:
            return names
        after = page.end_cursor


class CatalogFollower:
    """Loads a :class:`CatalogView` through ``api`` and keeps it current (see the module).

    ``poll`` (default: whether the store is shared between processes) reads the change
    log every ``interval`` seconds for catalog changes made elsewhere; without it, only
    this API's own defines and archives update the view, which is complete for a store
    no other process writes (the memory store).
    """

    def __init__(
        self,
        api: FeaturesAPI,
        view: CatalogView | None = None,
        *,
        interval: float = POLL_INTERVAL,
        poll: bool | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.api = api
        self.view = view if view is not None else CatalogView(strict=api.strict)
        self.interval = interval
        self.poll = api.store.shared_between_processes if poll is None else poll
        #: The revision of the change log read through.
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None
        #: Set by a pushed notice of a catalog change (another process defined or archived).
        self._wake = asyncio.Event()
        #: Set once the first attempt to load the view has ended, loaded or not.
        self._attempted = asyncio.Event()
        #: What stopped the last load or read of the change log; None when it succeeded.
        self.last_error: str | None = None

    async def start(self, *, within: float | None = None) -> None:
        """Start loading the view and following; wait at most ``within`` seconds (None:
        not at all) for the first attempt to load it. A store that cannot answer, or not
        that fast, does not hold up the start: the view loads in the background as soon
        as the store answers (each attempt's calls within the API's deadline)."""
        if self.view.changed_here not in self.api.catalog_listeners:
            self.api.catalog_listeners.append(self.view.changed_here)
        if self._pushed not in self.api.pushed_listeners:
            self.api.pushed_listeners.append(self._pushed)
        self._task = asyncio.create_task(self._run(), name="features-gql-catalog")
        if within is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._attempted.wait()
            if not self._attempted.is_set():
                log.warning(
                    "the feature catalog is still loading after %g s; serving meanwhile", within
                )

    def _pushed(self, revision: int, catalog: bool) -> None:
        if catalog and revision > self._cursor:
            self._wake.set()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.api.catalog_listeners.remove(self.view.changed_here)
        with contextlib.suppress(ValueError):
            self.api.pushed_listeners.remove(self._pushed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def load(self, *, reset: bool = False) -> None:
        """Read the live features as of now into the view (the revision first: changes
        after it are read again from the change log, which converges)."""
        revision = await self.api.revision()
        names = await live_features(self.api)
        self.view.replace(revision, names, reset=reset)
        self._cursor = revision
        if self.last_error is not None:
            log.info("feature catalog loaded: %d live features", len(self.view.names))
        self.last_error = None

    def _failed(self, what: str, exc: Exception) -> None:
        """Log the first of a run of failures (a store error as such, anything else with
        its traceback: the follower outlives bugs too, and keeps trying)."""
        if self.last_error is None:
            if isinstance(exc, StoreError):
                log.warning("%s: %s", what, exc)
            else:
                log.exception("%s", what, exc_info=exc)
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _run(self) -> None:
        failures = 0
        while not self.view.loaded:
            if failures:
                await asyncio.sleep(random.uniform(0.5, 1.0) * _backoff(failures))
            try:
                await self.load()
            except Exception as exc:  # the follower outlives bugs too, and keeps trying
                failures += 1
                self._failed("could not load the feature catalog; retrying", exc)
            finally:
                self._attempted.set()
        while self.poll:
            # A pushed notice of a catalog change cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0.75, 1.25) * self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception as exc:
                # The view keeps answering as it is: stale, like any copy, not wrong.
                self._failed("cannot read the change log for catalog changes", exc)

    async def _catch_up(self) -> None:
        """Apply the catalog changes written since the cursor (by any process)."""
        head = await self.api.revision()
        if head < self._cursor:
            log.warning("the store went back (restored from a backup?): reloading the catalog")
            await self.load(reset=True)
            return
        try:
            while self._cursor < head:
                changes = await self.api.changes_since(self._cursor, limit=MAX_PAGE_SIZE)
                if not changes:
                    break
                for change in changes:
                    self.view.apply(change)
                self._cursor = changes[-1].revision
        except ChangesTrimmed:
            # Behind the retained log: a fresh load replaces what could not be read.
            log.info("the change log was trimmed past the catalog's position: reloading it")
            await self.load()
            return
        self.last_error = None


def _backoff(failures: int) -> float:
    return float(min(MAX_BACKOFF, MIN_BACKOFF * 2 ** min(failures, 10)))
