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
from collections.abc import Iterable, Sequence

from features_gql.api import MAX_PAGE_SIZE, FeaturesAPI
from features_gql.domain import ChangeEvent, DefinitionResult
from features_gql.flag_evaluation import CatalogUnavailable
from features_gql.replication.follower import Backoff, Follower, LoadReason, Source
from features_gql.replication.store_source import StoreSource

log = logging.getLogger("features_gql.catalog")

#: Seconds between two reads of the change log for other processes' catalog changes.
POLL_INTERVAL = 1.0
#: Backoff between attempts while the store cannot be read: from MIN_BACKOFF, doubling,
#: up to MAX_BACKOFF, jittered.
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
    """Loads a :class:`CatalogView` through ``api`` and keeps it current (see the module),
    with the project's one follower (:mod:`features_gql.replication.follower`), the view
    being its sink.

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
        self.follower = Follower(
            # Woken at once by a pushed notice of a catalog change (another process
            # defined or archived); this process's own are told by the API.
            StoreSource(api, interval=interval, batch=MAX_PAGE_SIZE, catalog_only=True),
            self,
            name="the feature catalog",
            backoff=Backoff(MIN_BACKOFF, MAX_BACKOFF, floor=0.5),
            tail=self.poll,
            logger=log,
        )

    @property
    def last_error(self) -> str | None:
        """What stopped the last load or read of the change log; None when it succeeded."""
        return self.follower.status.last_error

    async def start(self, *, within: float | None = None) -> None:
        """Start loading the view and following; wait at most ``within`` seconds (None:
        not at all) for the first attempt to load it. A store that cannot answer, or not
        that fast, does not hold up the start: the view loads in the background as soon
        as the store answers (each attempt's calls within the API's deadline)."""
        if self.view.changed_here not in self.api.catalog_listeners:
            self.api.catalog_listeners.append(self.view.changed_here)
        self.follower.start()
        if within is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self.follower.attempted.wait()
            if not self.follower.attempted.is_set():
                log.warning(
                    "the feature catalog is still loading after %g s; serving meanwhile", within
                )

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.api.catalog_listeners.remove(self.view.changed_here)
        await self.follower.stop()

    # -- the follower's sink --------------------------------------------------------------

    @property
    def position(self) -> int | None:
        return self._cursor if self.view.loaded else None

    async def continues(self, source: Source) -> bool:
        return True

    async def load(self, source: Source | None = None, reason: LoadReason = "start") -> None:
        """Read the live features as of now into the view (the revision first: changes
        after it are read again from the change log, which converges). A store that went
        back (restored from an older backup) makes the view forget what it recorded."""
        if reason == "trimmed":
            # Behind the retained log: a fresh load replaces what could not be read.
            log.info("the change log was trimmed past the catalog's position: reloading it")
        revision = await self.api.revision()
        names = await live_features(self.api)
        self.view.replace(revision, names, reset=reason in ("went-back", "history"))
        self._cursor = revision
        if self.follower.status.last_error is not None:
            log.info("feature catalog loaded: %d live features", len(self.view.names))

    async def apply(self, changes: Sequence[ChangeEvent]) -> None:
        for change in changes:
            self.view.apply(change)
        self._cursor = changes[-1].revision
