"""An in-process copy of the assignments, for reads that cost about a dict lookup.

The embedded deployment (the application keeps the flags in its own database) reads
flags on its hot path; going through the store for each check costs microseconds to
milliseconds. A :class:`LocalReplica` loads a snapshot of the store page by page, then
follows its changes: pushed by the process's :class:`~features_gql.feed.ChangeFeed` when
the application also serves GraphQL (a change made through it arrives at once), or by
polling the change log (at once on a pushed notice, over a store that pushes them:
PostgreSQL). A check is then a set lookup in the application's own memory. If
the store goes down the replica keeps answering from its copy and reports how stale that
copy is; if the store comes back behind the copy (restored from a backup) or its change
log was trimmed past the copy, the replica reloads a snapshot.

    replica = LocalReplica(api, feed=service_feed)   # or LocalReplica(api, interval=1.0)
    await replica.start()
    if replica.has(("pipeline", pipeline_id), "speedups"): ...
    await replica.stop()

**Compact.** The copy keeps, for each assignment, a 64-bit fingerprint of its
((type, id), feature): Python's own keyed hash of the tuple, so about 70 bytes per
assignment whatever the length of the ids, where a set of the tuples themselves takes
300. Two different assignments share a fingerprint with probability 2⁻⁶⁴, so a check
answers a wrong ``True`` with probability below n/2⁶⁴ (5·10⁻¹⁴ at a million assignments);
the hash's key is random per process, so nobody can construct such a pair.

**The catalog too.** :attr:`LocalReplica.catalog` is the set of live features (defined,
not archived) as of the same revision: loaded with the snapshot and kept current by the
``define`` and ``archive`` changes the replica reads anyway, so the in-process
OpenFeature provider answers ``FLAG_NOT_FOUND`` for an undefined flag in strict mode
(``FeaturesAPI(store, strict=True)``) without any I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from features_gql.api import FeaturesAPI
from features_gql.catalog_view import CatalogView, live_features
from features_gql.domain import Assignment, ChangeEvent, Resource
from features_gql.errors import SnapshotsUnsupported
from features_gql.feed import ChangeFeed
from features_gql.replication.follower import Backoff, Follower, LoadReason, Source
from features_gql.replication.store_source import FeedSource, StoreSource

log = logging.getLogger("features_gql.replica")

#: Assignments per snapshot page while loading.
SNAPSHOT_PAGE = 5000

#: See :attr:`LocalReplica.listeners`.
ReplicaListener = Callable[[Sequence[ChangeEvent], Exception | None], None]


class LocalReplica:
    def __init__(
        self,
        api: FeaturesAPI,
        *,
        interval: float = 1.0,
        batch: int = 1000,
        feed: ChangeFeed | None = None,
    ) -> None:
        """``interval``: seconds between polls of the change log (or, with a ``feed``,
        between checks that the copy is current), and about the wait between attempts
        while the store fails; ``feed``: follow this change feed of ``api`` instead of
        polling."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.api = api
        self.interval = interval
        self.batch = batch
        self.feed = feed
        self._keys: set[int] = set()
        self._revision = 0
        self._loaded = False
        #: The live features as of :attr:`revision`; strict when ``api`` is.
        self.catalog = CatalogView(strict=api.strict)
        #: Snapshots loaded since the start (the first load, then any reload).
        self.loads = 0
        source: Source = (
            StoreSource(api, interval=interval, batch=batch)
            if feed is None
            else FeedSource(feed, api, interval=interval)
        )
        #: Keeps the copy current: see :mod:`features_gql.replication.follower`.
        self.follower = Follower(
            source,
            self,
            name="the replica",
            # About one interval between attempts while the store fails, as between polls.
            backoff=Backoff(interval, interval, floor=0.5),
            logger=log,
        )

    @property
    def listeners(self) -> list[ReplicaListener]:
        """Told the outcome of every attempt to catch up with the store, on the replica's
        event loop: ``listener(changes, None)`` with the changes applied (often none;
        none for a snapshot loaded, which is not a list of changes), or
        ``listener((), error)`` with the error that stopped a follow-up. Listeners must be
        quick; one that raises is logged and the others still run."""
        return self.follower.listeners

    @listeners.setter
    def listeners(self, listeners: list[ReplicaListener]) -> None:
        self.follower.listeners[:] = listeners

    @property
    def last_error(self) -> str | None:
        """Why the copy could not be followed last (None while following)."""
        return self.follower.status.last_error

    def has(self, resource: Resource | tuple[str, str], feature: str) -> bool:
        """Whether ``resource`` had ``feature`` as of :attr:`revision`; the arguments are
        those of :meth:`FeaturesAPI.has`. Unknown names, valid or not, are simply absent:
        this path does no validation, for speed."""
        # A Resource hashes as its (type, id) tuple, so either form finds the same key.
        return hash((resource, feature)) in self._keys

    def __len__(self) -> int:
        """How many assignments the copy holds."""
        return len(self._keys)

    @property
    def revision(self) -> int:
        """The revision of the last change applied to this copy."""
        return self._revision

    @property
    def staleness(self) -> float | None:
        """Seconds since the copy was last known to be current; None before the first sync."""
        synced = self.follower.status.synced_at
        return None if synced is None else time.monotonic() - synced

    def _apply_one(self, change: ChangeEvent) -> None:
        if change.revision <= self._revision:
            return
        # Add and remove change an assignment, define and archive the catalog; any kind
        # a later version logs only moves the revision on.
        if change.resource is not None and change.op in ("add", "remove"):
            key = hash(((change.resource.type, change.resource.id), change.feature))
            if change.op == "add":
                self._keys.add(key)
            else:
                self._keys.discard(key)
        else:
            self.catalog.apply(change)
        self._revision = change.revision

    # -- the follower's sink --------------------------------------------------------------

    @property
    def position(self) -> int | None:
        return self._revision if self._loaded else None

    async def continues(self, source: Source) -> bool:
        return True

    async def apply(self, changes: Sequence[ChangeEvent]) -> None:
        for change in changes:
            self._apply_one(change)

    async def load(self, source: Source | None = None, reason: LoadReason = "start") -> None:
        """Load a snapshot into a new copy and switch to it (the previous copy answers
        until then); the changes after it follow."""
        keys: set[int] = set()
        add = keys.add
        after: Assignment | None = None
        try:
            first = await self.api.snapshot_page(None, limit=SNAPSHOT_PAGE)
        except SnapshotsUnsupported:
            log.info("the store has no snapshots: loading by replaying its change log")
            self._keys, self._revision, self._loaded = keys, 0, True
            self.catalog.replace(0, (), reset=True)  # the log's defines rebuild it
            self.loads += 1
            await self.follower.catch_up()  # loaded means current, as a snapshot would be
            return
        revision, page = first.revision, first.assignments
        while True:
            for type_, id_, feature in page:
                add(hash(((type_, id_), feature)))
            if len(page) < SNAPSHOT_PAGE:
                break
            after = page[-1]
            page = (await self.api.snapshot_page(after, limit=SNAPSHOT_PAGE)).assignments
        # Read after the snapshot's revision, as the pages are: the changes after it
        # converge both.
        names = await live_features(self.api) if self.api.store.supports_catalog else ()
        self._keys, self._revision, self._loaded = keys, revision, True
        self.catalog.replace(revision, names, reset=True)
        self.loads += 1

    async def refresh(self) -> int:
        """Apply every change after :attr:`revision` now, without waiting for the follower;
        returns how many were applied."""
        return await self.follower.catch_up()

    async def start(self) -> None:
        """Load the copy (raises if the store cannot answer), then follow the store."""
        await self.follower.load()
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
