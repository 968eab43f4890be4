"""The edge replica (``features-gql serve --upstream URL``): a persistent copy of an
upstream service that answers reads locally and keeps answering when the upstream is down.

- :class:`EdgeSync` keeps the local store a replica of the upstream. It loads a snapshot
  and follows the upstream's ``featureChanges`` subscription (polling its change log when
  the upstream serves no WebSocket), reconnecting with jittered backoff. Where it is
  (the upstream revision its copy reflects, and that change's fingerprint) is kept in a
  small state file next to the local data, so a restart resumes without a reload.
- It resyncs from a snapshot with no operator action whenever the copy cannot simply be
  continued: the upstream is behind the copy (restored from an older backup, or its data
  lost), the change at the copy's revision is not the one the copy saw (a different
  history), or the upstream's log was trimmed past the copy (``RESYNC_REQUIRED``). A
  resync applies only the differences, as bulk changes of the local store (chunks of
  :data:`RESYNC_CHUNK`), so the edge's own subscribers (another edge following this one)
  converge the same way.
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
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from features_gql.api import FeaturesAPI
from features_gql.catalog_view import CatalogView
from features_gql.domain import (
    Assignment,
    BulkResult,
    ChangeEvent,
    DefinitionResult,
    FeatureSpec,
    Resource,
    SetResult,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import (
    ChangesTrimmed,
    MalformedUpstream,
    StoreError,
    StoreUnavailable,
    StoreUnsupported,
    UpstreamRefused,
    UpstreamUnavailable,
)
from features_gql.replication import wire
from features_gql.request_context import request_credentials
from features_gql.stores.base import Store, WrappingStore
from features_gql.upstream import NoSubscriptions, UpstreamClient

log = logging.getLogger("features_gql.edge")

#: Backoff between reconnection attempts: from this, doubling, up to MAX_BACKOFF, jittered.
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: The same for an upstream that answered something the edge refused (MalformedUpstream):
#: it will most likely answer the same again, until someone fixes it.
MALFORMED_MIN_BACKOFF = 1.0
MALFORMED_MAX_BACKOFF = 30.0
#: Seconds connected with no error before a follower that failed counts as recovered.
RECOVERED_AFTER = 1.0
#: Assignments per bulk call when a resync applies its differences to the copy.
RESYNC_CHUNK = 2000
#: Snapshot pages in a row with no assignments while more are said to follow: more than
#: this is paging that makes no progress.
EMPTY_PAGES_MAX = 10
#: Seconds between two polls of the upstream's change log when it serves no WebSocket.
POLL_INTERVAL = 1.0
#: How often a follower that polls tries the subscription again.
RETRY_SUBSCRIPTION = 60.0
#: Assignments per snapshot page read from the upstream.
SNAPSHOT_PAGE = 5000
#: The longest the state file lags behind the copy (re-applying a change is harmless).
SAVE_EVERY = 0.2
#: The longest a forwarded write waits for its change to reach the local copy.
READ_YOUR_WRITE_WAIT = 1.0


def fingerprint(event: ChangeEvent) -> str:
    """What identifies a change of the upstream's history, beyond its revision."""
    return "|".join(
        (str(event.revision), event.op,
         *(("", "") if event.resource is None else (event.resource.type, event.resource.id)),
         event.feature, event.at.isoformat())
    )  # fmt: skip


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


#: What a follower is doing: ``connecting`` (never reached the upstream yet), ``following``
#: (connected, no error), ``unreachable`` (the upstream cannot be reached or cannot
#: answer), ``refused`` (it refuses the edge's token), ``malformed`` (it answered
#: something the edge refused to apply: see ``last_error``), ``failing`` (the local store
#: failed, or a bug). In every state but the first the edge serves its copy.
FollowerState = Literal["connecting", "following", "unreachable", "refused", "malformed", "failing"]


#: How the log says the follower entered each state.
_CONDITIONS: dict[FollowerState, str] = {
    "connecting": "connecting to the upstream",
    "following": "following the upstream",
    "unreachable": "lost the upstream",
    "refused": "the upstream refuses the edge",
    "malformed": "the upstream answered what the edge refuses to apply, applying nothing of it",
    "failing": "the edge's follower failed",
}


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
    """Keeps ``local``'s store a replica of the upstream (see the module docstring).

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
        self.upstream_revision: int | None = None
        self.connected = False
        self.caught_up = False
        self.mode = "subscription"
        self.reconnects = 0
        self.resyncs = 0
        self.last_error: str | None = None
        #: What the follower is doing; the state last logged (a line per change of it).
        self.condition: FollowerState = "connecting"
        self._logged: FollowerState = "connecting"
        self._recovery: asyncio.TimerHandle | None = None
        #: Set by a resync, cleared once the follower gets past connecting after it: an
        #: upstream that asks for another resync at once is refused, not obeyed in a loop.
        self._just_resynced = False
        self._synced_monotonic: float | None = None
        self._saved_at = 0.0
        self._dirty = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._next_subscription_try = 0.0
        #: The upstream's live features, for flag evaluation (set by whoever serves them).
        self.catalog: CatalogView | None = None
        #: Whether :attr:`catalog` follows the upstream's: loaded, and no resync since.
        self._catalog_current = False

    # -- status ---------------------------------------------------------------------------

    @property
    def revision(self) -> int | None:
        return None if self.state is None else self.state.revision

    def staleness(self) -> float | None:
        """Seconds the copy may be behind the upstream; None when it never synced."""
        if self.state is None:
            return None
        if self.connected and self.caught_up:
            return 0.0
        if self._synced_monotonic is not None:
            return time.monotonic() - self._synced_monotonic
        if self.state.synced_at is not None:
            return max(0.0, time.time() - self.state.synced_at)
        return None

    def status(self) -> SyncStatus:
        synced = None if self.state is None else self.state.synced_at
        if self.connected and self.caught_up:
            synced = time.time()
        return SyncStatus(
            upstream=self.client.describe(),
            revision=self.revision,
            upstream_revision=self.upstream_revision,
            connected=self.condition == "following",
            last_synced_at=None if synced is None else datetime.fromtimestamp(synced, UTC),
            lag_seconds=self.staleness(),
            mode=self.mode,
            reconnects=self.reconnects,
            resyncs=self.resyncs,
            last_error=self.last_error,
            state=self.condition,
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
        self._task = asyncio.create_task(self._run(), name="features-gql-edge-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._recovery is not None:
            self._recovery.cancel()
        self._save(force=True)

    async def wait_until(self, upstream_revision: int, within: float) -> bool:
        """Whether the copy reached ``upstream_revision`` within ``within`` seconds."""
        if self.revision is not None and self.revision >= upstream_revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (upstream_revision, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        resync = False
        while True:
            malformed = False
            try:
                if resync:
                    await self._resync()
                    resync = False
                await self._connect_and_follow()
                failures = 0
                continue
            except ChangesTrimmed as exc:
                if not self._just_resynced:
                    self._note("the upstream's change log no longer holds the copy's revision")
                    resync = True
                    continue
                self._just_resynced = False
                malformed = True
                self._lost(
                    f"the upstream asked for a resync again right after one: {exc}", "malformed"
                )
            except MalformedUpstream as exc:
                # Nothing of it was applied: serve the copy, and ask again later (the
                # same answer most likely, until the upstream is fixed).
                self._just_resynced = False
                malformed = True
                self._lost(str(exc), "malformed")
            except UpstreamUnavailable as exc:
                self._lost(str(exc), "unreachable")
                if exc.resume_at_once:
                    self.reconnects += 1
                    continue
            except UpstreamRefused as exc:
                # The upstream refused the edge's token: that needs an operator; keep
                # serving the copy meanwhile.
                self._lost(str(exc), "refused")
            except StoreError as exc:
                self._lost(str(exc), "failing")
            except Exception as exc:  # the follower must outlive any bug: log, back off, retry
                if self.condition != "failing":
                    log.exception("the edge's follower failed; retrying")
                self._lost(f"{type(exc).__name__}: {exc}", "failing")
            failures += 1
            self.reconnects += 1
            if malformed:
                ceiling = MALFORMED_MIN_BACKOFF * 2 ** min(failures - 1, 10)
                delay = random.uniform(0.5, 1.0) * min(MALFORMED_MAX_BACKOFF, ceiling)
            else:
                delay = random.uniform(0, min(MAX_BACKOFF, MIN_BACKOFF * 2 ** min(failures, 10)))
            await asyncio.sleep(delay)

    def _lost(self, reason: str, condition: FollowerState) -> None:
        # One line per change of state, not per attempt: a follower refused by a broken
        # upstream for an hour logs a line, not thousands.
        if condition != self._logged:
            log.warning("%s; serving the copy: %s", _CONDITIONS[condition], reason)
            self._logged = condition
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None
        if self.connected and self.caught_up:
            self._synced_monotonic = time.monotonic()
            if self.state is not None:
                self.state.synced_at = time.time()
                self._dirty = True
        self.connected = False
        self.caught_up = False
        self.condition = condition
        self.last_error = reason
        self._save(force=True)

    def _note(self, message: str, *args: object) -> None:
        """A warning on the way to following, unless the follower is stuck on an upstream
        it refuses (then every retry would repeat it: its state was logged already)."""
        log.log(logging.DEBUG if self.condition == "malformed" else logging.WARNING, message, *args)

    def _connected(self) -> None:
        """Connected (again): following at once the first time; after a failure, once
        something is applied or :data:`RECOVERED_AFTER` seconds pass without an error, so
        an upstream that fails every attempt right after connecting does not flap."""
        self.connected = True
        if self.last_error is None:
            self._recovered()
        elif self._recovery is None:
            self._recovery = asyncio.get_running_loop().call_later(RECOVERED_AFTER, self._recovered)

    def _recovered(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None
        if not self.connected or self.condition == "following":
            return
        if self._logged != "connecting":
            log.warning("following the upstream %s again", self.client.describe())
        self._logged = self.condition = "following"
        self.last_error = None

    async def _connect_and_follow(self) -> None:
        upstream_revision = await self.client.revision()
        self.upstream_revision = upstream_revision
        if await self._must_resync(upstream_revision):
            if self._just_resynced:
                raise MalformedUpstream(
                    "revision",
                    f"the upstream is at revision {upstream_revision}, behind the snapshot it "
                    "has just sent: it asks for another resync right after one",
                )
            await self._resync()
            return
        self._just_resynced = False
        assert self.state is not None
        await self._catch_up_catalog()
        self._connected()
        self._check_caught_up()
        if self.mode == "polling" and time.monotonic() < self._next_subscription_try:
            await self._poll()
            return
        try:
            async for event in self.client.subscribe(self.state.revision):
                await self._apply([event])
        except NoSubscriptions as exc:
            log.warning("following the upstream by polling: %s", exc)
            self.mode = "polling"
            self._next_subscription_try = time.monotonic() + RETRY_SUBSCRIPTION
            await self._poll()

    async def _poll(self) -> None:
        while time.monotonic() < self._next_subscription_try:
            assert self.state is not None
            await self._catch_up_catalog()  # after a resync here
            changes = await self.client.changes_since(self.state.revision, limit=1000)
            if changes:
                await self._apply(changes)
                self.upstream_revision = max(self.upstream_revision or 0, changes[-1].revision)
            else:
                self.upstream_revision = await self.client.revision()
                if self.upstream_revision < self.state.revision:
                    await self._resync()
                self._check_caught_up()
                await asyncio.sleep(random.uniform(0.5, 1.5) * POLL_INTERVAL)
        self.mode = "subscription"

    async def _must_resync(self, upstream_revision: int) -> bool:
        state = self.state
        if state is None:
            return True
        if upstream_revision < state.revision:
            self._note(
                "the upstream is at revision %d, behind the copy's %d: it lost data or was "
                "restored from an older backup; resyncing",
                upstream_revision,
                state.revision,
            )
            return True
        checks = [(state.revision, state.fingerprint)]
        if state.through is not None and state.through > state.revision:
            # A batch was being applied when the edge stopped: the copy may hold it.
            checks.append((state.through, state.through_fingerprint))
        for revision, expected in checks:
            if revision == 0 or (expected is None and revision == state.revision):
                continue
            if revision > upstream_revision:
                self._note("the upstream lacks change %d the copy may hold; resyncing", revision)
                return True
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
                return True
        return False

    def _check_caught_up(self) -> None:
        if self.state is not None and self.upstream_revision is not None:
            self.caught_up = self.state.revision >= self.upstream_revision
            if self.caught_up:
                self._synced_monotonic = time.monotonic()
                self.state.synced_at = time.time()
                self._dirty = True

    async def _apply(self, events: Sequence[ChangeEvent]) -> None:
        """Apply a batch of the upstream's changes. A batch that does not continue the
        copy (a revision at or before the copy's, or not increasing) is refused whole."""
        assert self.state is not None
        wire.check_sequence(events, self.state.revision)
        fresh = list(events)
        if fresh:
            self.state.through = fresh[-1].revision
            self.state.through_fingerprint = fingerprint(fresh[-1])
            self._dirty = True
            self._save(force=True)  # before the copy changes (see SyncState)
        for event in fresh:
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
        if self.upstream_revision is None or self.state.revision > self.upstream_revision:
            self.upstream_revision = self.state.revision
        self._check_caught_up()
        if fresh:
            self._recovered()
        self._wake_waiters()
        self._save()

    def _wake_waiters(self) -> None:
        revision = self.revision
        if revision is None:
            return
        for wanted, future in self._waiters:
            if wanted <= revision and not future.done():
                future.set_result(None)

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

    # -- resync -----------------------------------------------------------------------------

    async def _resync(self) -> None:
        """Make the copy the upstream's state: a snapshot, and only the differences applied."""
        started = time.monotonic()
        if self.state is not None and self.state.fingerprint != "resyncing":
            # Should this resync be cut short, the next connection resyncs again.
            self.state.fingerprint = "resyncing"
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
                for assignment in page.assignments:
                    yield assignment
                if page.assignments:
                    last = page.assignments[-1]
                    empty = 0
                else:
                    empty += 1
                cursor = paging.next_cursor(following)
                if cursor is None:
                    return
                if empty > EMPTY_PAGES_MAX:
                    raise MalformedUpstream(
                        "snapshot.hasNextPage",
                        f"{empty} empty pages in a row while more were said to follow",
                    )
                page, following = await self.client.snapshot_page(
                    cursor, limit=SNAPSHOT_PAGE, last=last
                )

        added, removed = await self._converge(upstream_keys())
        # The resync skipped the changes in between, catalog ones too: the view is loaded
        # again before the copy counts as synced, so the two never disagree after it.
        self._catalog_current = False
        await self._catch_up_catalog()
        self.resyncs += 1
        self._just_resynced = True
        # The copy is the upstream's state as of the first page (changes since follow).
        self.state = SyncState(self.client.describe(), first.revision, synced_at=time.time())
        self._synced_monotonic = time.monotonic()
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
            "resynced from the upstream's snapshot at revision %d: %d added, %d removed "
            "(%.2f s); following its changes from there",
            first.revision,
            added,
            removed,
            time.monotonic() - started,
        )

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
        A file that cannot be written stops the follower (a local store failure) rather
        than let the position move past a change the file lacks.
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
            raise StoreUnavailable(f"could not save the edge's catalog {path}: {exc}") from exc

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

    async def _converge(self, upstream: AsyncIterator[Assignment]) -> tuple[int, int]:
        """Merge the upstream's ordered keys with the copy's, applying the differences."""
        added = removed = 0

        async def local_keys() -> AsyncIterator[Assignment]:
            after: Assignment | None = None
            while True:
                page = await self.local.snapshot_page(after, limit=SNAPSHOT_PAGE)
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
                await self.local.add_many(to_add, actor="resync")
                to_add.clear()
            if len(to_remove) >= at_least:
                await self.local.remove_many(to_remove, actor="resync")
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

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        return await self.inner.snapshot_page(after, limit=limit)

    # Only addFeature and removeFeature are forwarded upstream; the catalog's writes and
    # the bulk writes are refused here, with a typed error, rather than applied to the copy.

    def _refuse(self, operation: str) -> StoreUnsupported:
        return StoreUnsupported(
            f"{operation} is not served by an edge replica: send it to the upstream "
            f"({self.client.describe()})"
        )

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        raise self._refuse("defineFeature")

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        raise self._refuse("archiveFeature")

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        raise self._refuse("addFeatures")

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        raise self._refuse("removeFeatures")

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        raise self._refuse("setFeatures")
