"""The edge replica (``features-gql serve --upstream URL``): a persistent copy of an
upstream service that answers reads locally and keeps answering when the upstream is down.

- :class:`EdgeSync` keeps the local store a replica of the upstream. It is the sink of the
  project's one :class:`~features_gql.replication.follower.Follower`, whose source is the
  upstream (:class:`~features_gql.replication.upstream_source.UpstreamSource`: its
  ``featureChanges`` subscription, or its change log polled when it serves no WebSocket).
  The follower loads, follows, reconnects with jittered backoff, refuses what it cannot
  take and keeps the status that ``syncStatus``, ``/readyz`` and the metrics report;
  EdgeSync holds the copy. Where the copy is (the upstream revision it reflects, and that
  change's fingerprint) is kept in a small state file next to the local data, so a restart
  resumes without a reload.
- The copy is resynced from a snapshot with no operator action whenever it cannot simply
  be continued: the upstream is behind the copy (restored from an older backup, or its
  data lost), the change at the copy's revision is not the one the copy saw (a different
  history: :meth:`EdgeSync.continues`), or the upstream's log was trimmed past the copy
  (``RESYNC_REQUIRED``). A resync (:meth:`EdgeSync.load`) applies only the differences, as
  bulk changes of the local store (chunks of :data:`RESYNC_CHUNK`), so the edge's own
  subscribers (another edge following this one) converge the same way.
- :class:`EdgeStore` is the store the edge's API serves from: reads go to the local
  store; writes go to the upstream with the caller's own token, and return once the
  change is in the local copy (so a client reads its own writes at the edge). While the
  upstream is unreachable a write fails with ``UPSTREAM_UNAVAILABLE`` and nothing is
  applied anywhere.

Local changes keep the edge's own revisions; ``syncStatus`` and ``/readyz`` report the
upstream revision the copy reflects and how stale it is.

The copy holds assignments, not definitions. Flag evaluation still needs to know which
features the upstream defines (OFREP answers every defined feature, and ``FLAG_NOT_FOUND``
for an undefined one in strict mode): :attr:`EdgeSync.catalog`, a
:class:`~features_gql.catalog_view.CatalogView`, is loaded from the upstream when the
follower connects (and again after a resync) and fed the upstream's define and archive
changes. It is saved beside the state file (:attr:`EdgeSync.catalog_file`) before the
position moves past a catalog change, so an edge that restarts while its upstream is down
evaluates flags with the catalog its copy reflects.

Nothing the upstream sends is guessed at: :mod:`features_gql.replication.wire` parses
every answer, and a batch the follower cannot take (an unknown op, a malformed field, a
revision out of range or out of order, paging that makes no progress) raises
:class:`~features_gql.errors.MalformedUpstream`: nothing of it is applied, the copy is
served as it is, ``syncStatus`` and ``/readyz`` say why (state ``malformed``), one line is
logged per change of state, and the follower asks again with backoff until the upstream
answers sanely.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from features_gql.api import FeaturesAPI
from features_gql.catalog_view import CatalogView
from features_gql.domain import (
    Assignment,
    ChangeEvent,
    Resource,
    WriteResult,
)
from features_gql.errors import (
    ChangesTrimmed,
    MalformedUpstream,
    StoreError,
    StoreUnavailable,
    StoreUnsupported,
    UpstreamRefused,
)
from features_gql.replication import wire
from features_gql.replication.follower import (
    Backoff,
    Follower,
    FollowerState,
    LoadReason,
    SinkFailed,
    Source,
)
from features_gql.replication.upstream_source import UpstreamSource
from features_gql.request_context import request_credentials
from features_gql.stores.base import Store, WrappingStore
from features_gql.stores.operations import Operation
from features_gql.upstream import UpstreamClient

log = logging.getLogger("features_gql.edge")

T = TypeVar("T")

#: Backoff between attempts to follow the upstream: from this, doubling, up to
#: MAX_BACKOFF, jittered.
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: The same for an upstream that answered something the edge refused (MalformedUpstream):
#: it will most likely answer the same again, until someone fixes it.
MALFORMED_MIN_BACKOFF = 1.0
MALFORMED_MAX_BACKOFF = 30.0
#: Assignments per bulk call when a resync applies its differences to the copy.
RESYNC_CHUNK = 2000
#: Snapshot pages in a row with no assignments while more are said to follow: more than
#: this is paging that makes no progress.
EMPTY_PAGES_MAX = 10
#: Assignments per snapshot page read from the upstream.
SNAPSHOT_PAGE = 5000
#: The longest the state file lags behind the copy (re-applying a change is harmless).
SAVE_EVERY = 0.2
#: The longest a forwarded write waits for its change to reach the local copy.
READ_YOUR_WRITE_WAIT = 1.0
#: The fingerprint of a state saved while a resync runs: should it be cut short, the
#: copy is resynced again rather than continued.
RESYNCING = "resyncing"

#: Why a resync was needed, as its summary line says.
_WHY: dict[LoadReason, str] = {
    "start": "no copy yet",
    "trimmed": "the upstream's change log no longer holds the copy's revision",
    "went-back": "the upstream went back behind the copy",
    "history": "the upstream's history is not the one the copy saw",
}


def fingerprint(event: ChangeEvent) -> str:
    """What identifies a change of the upstream's history, beyond its revision."""
    return "|".join(
        (str(event.revision), event.op,
         *(("", "") if event.resource is None else (event.resource.type, event.resource.id)),
         event.feature, event.at.isoformat())
    )  # fmt: skip


async def _own(work: Awaitable[T]) -> T:
    """``work`` on the copy's own store: its failures are the sink's, not the upstream's
    (a resync interleaves the two)."""
    try:
        return await work
    except (StoreError, OSError) as exc:
        raise SinkFailed(str(exc)) from exc


@dataclass
class SyncState:
    """Where the copy is: the upstream revision it reflects and that change's fingerprint.

    Saved *before* a batch of changes is applied, with the batch's last revision and
    fingerprint as ``through``: after a crash the copy holds anything up to ``through``,
    so the follower continues from ``revision`` (applying a change twice is harmless)
    only if the upstream still has both changes, else it resyncs. A copy never holds a
    change its state file does not know of.
    """

    upstream: str
    revision: int
    fingerprint: str | None = None
    synced_at: float | None = None  # wall-clock seconds
    through: int | None = None
    through_fingerprint: str | None = None

    @classmethod
    def load(cls, path: Path | None, upstream: str) -> SyncState | None:
        if path is None or not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = cls(
                str(data["upstream"]),
                int(data["revision"]),
                data.get("fingerprint"),
                data.get("synced_at"),
                data.get("through"),
                data.get("through_fingerprint"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable sync state %s (resyncing): %s", path, exc)
            return None
        if state.upstream != upstream:
            log.warning(
                "the copy followed %s, not %s: resyncing from the new upstream",
                state.upstream,
                upstream,
            )
            return None
        return state

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(
            json.dumps(
                {
                    "upstream": self.upstream,
                    "revision": self.revision,
                    "fingerprint": self.fingerprint,
                    "synced_at": self.synced_at,
                    "through": self.through,
                    "through_fingerprint": self.through_fingerprint,
                }
            ),
            encoding="utf-8",
        )
        os.replace(temporary, path)


@dataclass
class SyncStatus:
    """What ``syncStatus``, ``/readyz`` and the metrics report."""

    upstream: str
    #: The upstream revision the copy reflects (None before the first sync).
    revision: int | None
    #: The upstream's revision, as last heard.
    upstream_revision: int | None
    connected: bool
    #: Wall-clock time the copy was last known to be current.
    last_synced_at: datetime | None
    #: Seconds the copy may be behind: 0 while connected and caught up.
    lag_seconds: float | None
    mode: str = "subscription"
    reconnects: int = 0
    resyncs: int = 0
    last_error: str | None = field(default=None)
    #: What the follower is doing (:data:`FollowerState`).
    state: str = "connecting"


class EdgeSync:
    """Keeps ``local``'s store a replica of the upstream (see the module docstring): the
    sink of the edge's follower, and what the rest of the service asks about the copy.

    ``local`` is a FeaturesAPI over the local store itself (not the EdgeStore): changes
    applied through it are instrumented and wake the edge's own change feed.
    """

    def __init__(
        self, local: FeaturesAPI, client: UpstreamClient, *, state_file: Path | None
    ) -> None:
        self.local = local
        self.client = client
        self.state_file = state_file
        self.state: SyncState | None = None
        self.resyncs = 0
        self.source = UpstreamSource(client)
        # The backoffs are read when the edge is built, not imported: settable in tests.
        self.follower = Follower(
            self.source,
            self,
            name="the edge",
            backoff=Backoff(MIN_BACKOFF, MAX_BACKOFF),
            malformed_backoff=Backoff(MALFORMED_MIN_BACKOFF, MALFORMED_MAX_BACKOFF, floor=0.5),
            logger=log,
        )
        self.follower.listeners.append(self._outcome)
        #: The follower's ``synced_at`` last written into :attr:`state`.
        self._synced_seen: float | None = None
        self._saved_at = 0.0
        self._dirty = False
        #: The upstream's live features, for flag evaluation (set by whoever serves them).
        self.catalog: CatalogView | None = None
        #: Whether :attr:`catalog` follows the upstream's: loaded, and no resync since.
        self._catalog_current = False

    # -- status ---------------------------------------------------------------------------

    @property
    def position(self) -> int | None:
        """The upstream revision the copy reflects: the state file's (None: no copy)."""
        return None if self.state is None else self.state.revision

    @property
    def revision(self) -> int | None:
        return self.position

    @property
    def upstream_revision(self) -> int | None:
        return self.follower.status.source_revision

    @property
    def condition(self) -> FollowerState:
        """What the follower is doing."""
        return self.follower.status.state

    @property
    def connected(self) -> bool:
        return self.follower.status.connected

    @property
    def mode(self) -> str:
        """How the upstream is followed: ``subscription`` or ``polling``."""
        return self.source.mode

    def staleness(self) -> float | None:
        """Seconds the copy may be behind the upstream; None when it never synced."""
        if self.state is None:
            return None
        lag = self.follower.status.lag_seconds
        if lag is not None:
            return lag
        # Not synced since the start (the upstream is down): as of the state file.
        if self.state.synced_at is not None:
            return max(0.0, time.time() - self.state.synced_at)
        return None

    def status(self) -> SyncStatus:
        status = self.follower.status
        lag = self.staleness()
        synced = None if lag is None else time.time() - lag
        return SyncStatus(
            upstream=self.client.describe(),
            revision=self.revision,
            upstream_revision=status.source_revision,
            connected=status.connected,
            last_synced_at=None if synced is None else datetime.fromtimestamp(synced, UTC),
            lag_seconds=lag,
            mode=self.source.mode,
            reconnects=status.reconnects,
            resyncs=self.resyncs,
            last_error=status.last_error,
            state=status.state,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.state = SyncState.load(self.state_file, self.client.describe())
        if self.state is not None:
            log.info(
                "serving the copy of %s at upstream revision %d until the upstream answers",
                self.client.describe(),
                self.state.revision,
            )
            self._load_catalog()
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
        self._save(force=True)

    async def wait_until(self, upstream_revision: int, within: float) -> bool:
        """Whether the copy reached ``upstream_revision`` within ``within`` seconds."""
        return await self.follower.wait_until(upstream_revision, within)

    def _outcome(self, changes: Sequence[ChangeEvent], error: Exception | None) -> None:
        """After each step of the follower: when the copy was last current goes into the
        state file, so an edge restarted while its upstream is down says how stale its
        copy is. Saved at once on an error (a change of state, or a retry), else with the
        position (at most every :data:`SAVE_EVERY`)."""
        synced = self.follower.status.synced_at
        if self.state is not None and synced is not None and synced != self._synced_seen:
            self._synced_seen = synced
            self.state.synced_at = time.time() - (time.monotonic() - synced)
            self._dirty = True
        if error is not None:
            self._save(force=True)
        elif changes:
            self._save()

    def _save(self, *, force: bool = False) -> None:
        if self.state is None or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_EVERY:
            return
        try:
            self.state.save(self.state_file)
        except OSError as exc:
            log.warning("could not save the sync state %s: %s", self.state_file, exc)
            return
        self._saved_at = now
        self._dirty = False

    def _note(self, message: str, *args: object) -> None:
        """A warning on the way to following, unless the follower is stuck on an upstream
        it refuses (then every retry would repeat it: its state was logged already)."""
        state = self.follower.status.state
        log.log(logging.DEBUG if state == "malformed" else logging.WARNING, message, *args)

    # -- the follower's sink ----------------------------------------------------------------

    async def continues(self, source: Source) -> bool:
        """Whether the copy continues the upstream's history (the follower asks when the
        upstream is not behind the copy): the change at the copy's revision, and at the
        last one it may hold, must be the ones it saw. Then the catalog's view is loaded,
        unless it follows the upstream's already."""
        if not await self._same_history(source):
            return False
        await self._catch_up_catalog()
        return True

    async def _same_history(self, source: Source) -> bool:
        state = self.state
        assert state is not None  # asked only of a copy
        if state.fingerprint == RESYNCING:
            self._note("a resync of the copy was cut short; resyncing")
            return False
        upstream_revision = self.follower.status.source_revision
        if upstream_revision is None:
            upstream_revision = await source.revision()
        checks = [(state.revision, state.fingerprint)]
        if state.through is not None and state.through > state.revision:
            # A batch was being applied when the edge stopped: the copy may hold it.
            checks.append((state.through, state.through_fingerprint))
        for revision, expected in checks:
            if revision == 0 or (expected is None and revision == state.revision):
                continue
            if revision > upstream_revision:
                self._note("the upstream lacks change %d the copy may hold; resyncing", revision)
                return False
            try:
                found = await self.client.changes_since(revision - 1, limit=1)
            except ChangesTrimmed:
                continue  # cannot compare; a log trimmed past the copy answers on subscribe
            if not found or fingerprint(found[0]) != expected:
                self._note(
                    "the upstream's change %d is not the one the copy saw: its history "
                    "changed (restored from a backup?); resyncing",
                    revision,
                )
                return False
        return True

    async def apply(self, changes: Sequence[ChangeEvent]) -> None:
        """Apply a batch of the upstream's changes (the follower checked that it continues
        the copy). The position is saved before the copy changes (see SyncState), and
        after it with the follower's outcome (:meth:`_outcome`)."""
        assert self.state is not None
        if not changes:
            return
        self.state.through = changes[-1].revision
        self.state.through_fingerprint = fingerprint(changes[-1])
        self._dirty = True
        self._save(force=True)
        for event in changes:
            # The copy holds assignments only: catalog changes (define, archive) go to the
            # catalog's view, and move the position on.
            if event.resource is None:
                if self.catalog is not None and self.catalog.apply(event):
                    # On disk before the position moves past it (see _save_catalog).
                    self._save_catalog(event.revision)
            elif event.op == "add":
                await self.local.add(event.resource, event.feature, actor=event.actor)
            elif event.op == "remove":
                await self.local.remove(event.resource, event.feature, actor=event.actor)
            self.state.revision = event.revision
            self.state.fingerprint = fingerprint(event)
            self._dirty = True

    async def load(self, source: Source, reason: LoadReason) -> None:
        """Make the copy the upstream's state (a resync): a snapshot, and only the
        differences applied. The local store's failures are raised as SinkFailed; the
        upstream's as they are."""
        started = time.monotonic()
        if self.state is not None and self.state.fingerprint != RESYNCING:
            # Should this resync be cut short, the next connection resyncs again.
            self.state.fingerprint = RESYNCING
            self._dirty = True
            self._save(force=True)
        first, more = await self.client.snapshot_page(None, limit=SNAPSHOT_PAGE)

        async def upstream_keys() -> AsyncIterator[Assignment]:
            # Each page's keys must come after the last one's (the parser checks), so
            # pages that repeat make no progress and are refused; so are a cursor seen
            # before, and empty pages without end.
            page, following = first, more
            paging = wire.Paging("snapshot.endCursor")
            empty = 0
            last: Assignment | None = None
            while True:
                if page.assignments:
                    last = page.assignments[-1]
                    empty = 0
                else:
                    empty += 1
                cursor = paging.next_cursor(following)
                if cursor is not None and empty > EMPTY_PAGES_MAX:
                    raise MalformedUpstream(
                        "snapshot.hasNextPage",
                        f"{empty} empty pages in a row while more were said to follow",
                    )
                # The next page is asked for before this one is applied: the upstream
                # prepares it while the copy takes this one.
                ahead = (
                    None
                    if cursor is None
                    else asyncio.ensure_future(
                        self.client.snapshot_page(cursor, limit=SNAPSHOT_PAGE, last=last)
                    )
                )
                try:
                    for assignment in page.assignments:
                        yield assignment
                    if ahead is None:
                        return
                    page, following = await ahead
                finally:
                    if ahead is not None and not ahead.done():
                        ahead.cancel()
                        await asyncio.wait({ahead})

        added, removed = await self._converge(upstream_keys())
        # The resync skipped the changes in between, catalog ones too: the view is loaded
        # again before the copy counts as synced, so the two never disagree after it.
        self._catalog_current = False
        await self._catch_up_catalog()
        self.resyncs += 1
        # The copy is the upstream's state as of the first page (changes since follow).
        self.state = SyncState(self.client.describe(), first.revision, synced_at=time.time())
        # Saved before anything else is asked of the upstream: should it vanish during the
        # next call, the copy (converged above) is still known for what it is, and an edge
        # restarted during the outage serves it instead of having no copy at all.
        self._dirty = True
        self._save(force=True)
        found = []
        if first.revision > 0:
            with contextlib.suppress(ChangesTrimmed):
                found = await self.client.changes_since(first.revision - 1, limit=1)
        if found and found[0].revision == first.revision:
            # The change's fingerprint lets a later start tell a restored upstream apart.
            self.state.fingerprint = fingerprint(found[0])
            self._dirty = True
            self._save(force=True)
        log.warning(
            "resynced from the upstream's snapshot at revision %d (%s): %d added, %d removed "
            "(%.2f s); following its changes from there",
            first.revision,
            _WHY[reason],
            added,
            removed,
            time.monotonic() - started,
        )

    # -- the catalog's view -----------------------------------------------------------------

    async def _catch_up_catalog(self) -> None:
        """Load the upstream's live features into the view unless it follows them already
        (at the first connection, and after a resync). The upstream's revision is read
        first: the changes after it, which the follower applies next, converge the view.
        An upstream that refuses to list its catalog leaves the view as it is until the
        next resync or restart: the assignments are followed all the same."""
        if self.catalog is None or self._catalog_current:
            return
        revision = await self.client.revision()
        try:
            names = await self.client.live_features()
        except UpstreamRefused as exc:
            log.warning("the upstream refused to list its feature catalog: %s", exc)
        else:
            # Changes reach the view in the upstream's order from here on: nothing to keep.
            self.catalog.replace(revision, names, reset=True)
            self._save_catalog(revision)
        self._catalog_current = True

    @property
    def catalog_file(self) -> Path | None:
        """Where the catalog's view is kept, beside the state file."""
        if self.state_file is None:
            return None
        return self.state_file.with_name(self.state_file.stem + ".catalog.json")

    def _save_catalog(self, revision: int) -> None:
        """Write the view's names, as of the catalog change or load at ``revision``.

        Written (atomically) before the position moves past that revision, so the file
        always holds every catalog change up to the saved position: an edge restarted
        with its upstream down evaluates flags with it. Changes up to ``revision`` that
        are followed again after a restart are already in it, and ignored by the view.
        A file that cannot be written stops the follower (a failure of the edge's own,
        state ``failing``) rather than let the position move past a change it lacks.
        """
        path = self.catalog_file
        if path is None or self.catalog is None:
            return
        try:
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(
                json.dumps(
                    {
                        "upstream": self.client.describe(),
                        "revision": revision,
                        "names": sorted(self.catalog.names),
                    }
                ),
                encoding="utf-8",
            )
            os.replace(temporary, path)
        except OSError as exc:
            failure = StoreUnavailable(f"could not save the edge's catalog {path}: {exc}")
            raise SinkFailed(str(failure)) from failure

    def _load_catalog(self) -> None:
        """Load the view from :attr:`catalog_file`, when it is this upstream's."""
        path = self.catalog_file
        if path is None or self.catalog is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            upstream = data["upstream"]
            revision = wire.revision(data["revision"], "revision")
            names = [wire.feature(name, "names") for name in data["names"]]
        except (OSError, ValueError, KeyError, TypeError, MalformedUpstream) as exc:
            log.warning("ignoring the unreadable catalog %s: %s", path, exc)
            return
        if upstream != self.client.describe():
            return
        self.catalog.replace(revision, names, reset=True)
        log.info("serving the upstream's catalog as saved: %d live features", len(names))

    # -- resync -----------------------------------------------------------------------------

    async def _converge(self, upstream: AsyncIterator[Assignment]) -> tuple[int, int]:
        """Merge the upstream's ordered keys with the copy's, applying the differences."""
        added = removed = 0

        async def local_keys() -> AsyncIterator[Assignment]:
            after: Assignment | None = None
            while True:
                page = await _own(self.local.snapshot_page(after, limit=SNAPSHOT_PAGE))
                for assignment in page.assignments:
                    yield assignment
                if len(page.assignments) < SNAPSHOT_PAGE:
                    return
                after = page.assignments[-1]

        # The differences go to the copy in bulk calls: a resync of a million keys is
        # a few hundred store calls (and operation log lines), not a million.
        to_add: list[tuple[Resource, str]] = []
        to_remove: list[tuple[Resource, str]] = []

        async def flush(at_least: int) -> None:
            if len(to_add) >= at_least:
                await _own(self.local.add_many(to_add, actor="resync"))
                to_add.clear()
            if len(to_remove) >= at_least:
                await _own(self.local.remove_many(to_remove, actor="resync"))
                to_remove.clear()

        async def apply(key: Assignment, present: bool) -> None:
            (to_add if present else to_remove).append((key.resource, key.feature))
            await flush(RESYNC_CHUNK)

        mine = local_keys()
        theirs = upstream
        here = await anext(mine, None)
        there = await anext(theirs, None)
        while here is not None or there is not None:
            if there is None or (here is not None and here < there):
                assert here is not None
                await apply(here, False)
                removed += 1
                here = await anext(mine, None)
            elif here is None or there < here:
                await apply(there, True)
                added += 1
                there = await anext(theirs, None)
            else:
                here = await anext(mine, None)
                there = await anext(theirs, None)
        await flush(1)
        return added, removed


class EdgeStore(WrappingStore):
    """The store an edge serves from: reads are the local copy's, writes go upstream."""

    def __init__(self, local: Store, client: UpstreamClient, sync: EdgeSync) -> None:
        super().__init__(local)
        self.name = local.name
        self.client = client
        self.sync = sync
        self.never_suspends = False

    def describe(self) -> str:
        return f"edge of {self.client.describe()}, copy in {self.inner.describe()}"

    async def open(self) -> None:
        await self.inner.open()
        await self.client.open()

    async def close(self) -> None:
        try:
            await self.client.close()
        finally:
            await self.inner.close()

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._forward("add", resource, feature)

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._forward("remove", resource, feature)

    async def _forward(self, op: str, resource: Resource, feature: str) -> WriteResult:
        started = time.monotonic()
        result = await self.client.write(
            op,
            resource,
            feature,
            authorization=request_credentials.get(),
            within=READ_YOUR_WRITE_WAIT,
        )
        # Answer once the change is in the copy, so the caller reads its own write here.
        # The revision answered is the edge's own, as every revision it serves.
        wait = max(0.05, READ_YOUR_WRITE_WAIT - (time.monotonic() - started))
        await self.sync.wait_until(result.revision, wait)
        return WriteResult(result.changed, await self.inner.revision())

    async def around(self, op: Operation, call: Callable[[], Awaitable[T]]) -> T:
        # Only addFeature and removeFeature are forwarded upstream (above); the catalog's
        # writes and the bulk writes are refused here, with a typed error, rather than
        # applied to the copy.
        if op.writes:
            raise StoreUnsupported(
                f"{op.mutation or op.name} is not served by an edge replica: send it to the "
                f"upstream ({self.client.describe()})"
            )
        return await call()
