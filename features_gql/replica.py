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

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence

from features_gql.api import FeaturesAPI
from features_gql.catalog_view import CatalogView, live_features
from features_gql.domain import Assignment, ChangeEvent, Resource
from features_gql.errors import ChangesTrimmed, InvalidInput, SnapshotsUnsupported, StoreError
from features_gql.feed import ChangeFeed, SubscriberTooSlow

log = logging.getLogger("features_gql.replica")

#: Assignments per snapshot page while loading.
SNAPSHOT_PAGE = 5000

#: See :attr:`LocalReplica.listeners`.
ReplicaListener = Callable[[Sequence[ChangeEvent], StoreError | None], None]


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
        between checks that the copy is current); ``feed``: follow this change feed of
        ``api`` instead of polling."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.api = api
        self.interval = interval
        self.batch = batch
        self.feed = feed
        self._keys: set[int] = set()
        self._revision = 0
        self._synced_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set by a pushed notice of a change (a store that pushes: PostgreSQL).
        self._wake = asyncio.Event()
        self.last_error: str | None = None
        #: The live features as of :attr:`revision`; strict when ``api`` is.
        self.catalog = CatalogView(strict=api.strict)
        #: Snapshots loaded since the start (the first load, then any reload).
        self.loads = 0
        #: Told the outcome of every attempt to catch up with the store, on the replica's
        #: event loop: ``listener(changes, None)`` with the changes applied (often none;
        #: none for a snapshot loaded, which is not a list of changes), or
        #: ``listener((), error)`` with the error that stopped a follow-up. Listeners
        #: must be quick; one that raises is logged and the others still run.
        self.listeners: list[ReplicaListener] = []

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
        return None if self._synced_at is None else time.monotonic() - self._synced_at

    def apply(self, change: ChangeEvent) -> None:
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

    async def load(self) -> None:
        """Load a snapshot into a new copy, then the changes after it, and switch to it
        (the previous copy answers until then)."""
        keys: set[int] = set()
        add = keys.add
        after: Assignment | None = None
        try:
            first = await self.api.snapshot_page(None, limit=SNAPSHOT_PAGE)
        except SnapshotsUnsupported:
            log.info("the store has no snapshots: loading by replaying its change log")
            self._keys, self._revision = keys, 0
            self.catalog.replace(0, (), reset=True)  # the log's defines rebuild it
            await self.refresh()
            self.loads += 1
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
        self._keys, self._revision = keys, revision
        self.catalog.replace(revision, names, reset=True)
        self.loads += 1
        await self.refresh()

    async def refresh(self) -> int:
        """Apply every change after :attr:`revision`; returns how many were applied."""
        applied: list[ChangeEvent] = []
        while True:
            changes = await self.api.changes_since(self._revision, limit=self.batch)
            for change in changes:
                self.apply(change)
            applied.extend(changes)
            if len(changes) < self.batch:
                break
        self._synced_at = time.monotonic()
        self.last_error = None
        self._tell(applied, None)
        return len(applied)

    def _tell(self, changes: Sequence[ChangeEvent], error: StoreError | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(changes, error)
            except Exception:
                log.exception("a replica listener raised; the replica carries on")

    async def start(self) -> None:
        """Load the copy (raises if the store cannot answer), then follow the store."""
        await self.load()
        follow = self._follow_feed() if self.feed is not None else self._poll()
        if self.feed is None and self._pushed not in self.api.pushed_listeners:
            self.api.pushed_listeners.append(self._pushed)
        self._task = asyncio.create_task(follow, name="features-gql-replica")

    def _pushed(self, revision: int, catalog: bool) -> None:
        if revision > self._revision:
            self._wake.set()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.api.pushed_listeners.remove(self._pushed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _failed(self, exc: StoreError) -> None:
        if self.last_error is None:
            log.warning("replica cannot follow the store, answering from its copy: %s", exc)
        self.last_error = str(exc)
        self._tell((), exc)

    async def _reload_if_behind(self) -> bool:
        """Reload when the store is behind the copy: it lost data or was restored."""
        if await self.api.revision() < self._revision:
            log.warning("the store is behind the replica (restored from a backup?): reloading")
            await self.load()
            return True
        return False

    async def _poll(self) -> None:
        while True:
            # A pushed notice of a change cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._reload_if_behind():
                    await self.refresh()
            except ChangesTrimmed:
                await self._reload()
            except StoreError as exc:
                self._failed(exc)

    async def _reload(self) -> None:
        try:
            await self.load()
        except StoreError as exc:
            self._failed(exc)

    async def _follow_feed(self) -> None:
        while True:
            following = asyncio.create_task(self._consume_feed())
            checking = asyncio.create_task(self._check_current())
            try:
                done, _ = await asyncio.wait(
                    {following, checking}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # Both end here, also when this task is cancelled (the replica stops).
                for task in (following, checking):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if following in done and following.result():
                return  # the feed stopped: the service is shutting down
            # Reloaded, or the store failed: subscribe again from the copy's revision.

    async def _consume_feed(self) -> bool:
        """Apply the feed's changes; True when the feed stopped, False to subscribe again."""
        assert self.feed is not None
        try:
            async for change in self.feed.subscribe(self._revision):
                self.apply(change)
                self._synced_at = time.monotonic()
                self.last_error = None
                self._tell((change,), None)
        except SubscriberTooSlow:
            return False
        except InvalidInput:
            # The copy is past the store's revision: the store went back.
            try:
                await self._reload_if_behind()
            except StoreError as exc:
                self._failed(exc)
                await asyncio.sleep(random.uniform(0.5, 1.5) * self.interval)
            return False
        except ChangesTrimmed:
            await self._reload()
            return False
        except StoreError as exc:
            self._failed(exc)
            await asyncio.sleep(random.uniform(0.5, 1.5) * self.interval)
            return False
        return True

    async def _check_current(self) -> None:
        """With a feed, confirm now and then that the copy is current (for staleness), and
        return after reloading a copy the store fell behind (restored from a backup)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                revision = await self.api.revision()
                if revision < self._revision and await self._reload_if_behind():
                    return
                if revision == self._revision:
                    self._synced_at = time.monotonic()
                    self.last_error = None
                    self._tell((), None)
            except StoreError as exc:
                self._failed(exc)
