"""The live change feed: every change after a revision, in order, then changes as they happen.

One :class:`ChangeFeed` per process follows the store's change log (with the project's one
follower, :mod:`features_gql.replication.follower`, its window being the sink) and hands
each new change to its subscribers. It learns of changes two ways: a write through this process's
:class:`~features_gql.api.FeaturesAPI` wakes it at once, and it polls the change log
(every :data:`POLL_INTERVAL` seconds while anyone subscribes), which is how changes made
by other processes sharing the store (``--workers N``, several instances on one database)
reach this process's subscribers. Over a store that pushes a notice of every commit
(PostgreSQL's ``LISTEN/NOTIFY``: :meth:`~features_gql.stores.base.Store.watch`), the
notice wakes it at once, and it polls only every second
(:data:`~features_gql.replication.store_source.WATCHED_INTERVAL`).

**Memory that does not grow with subscribers or with events delivered.** The feed keeps
the latest :data:`RETAIN` changes in one window that every subscriber shares; a
subscriber holds only its position in it. One that falls behind the window (a slow
reader, or one that starts far back) reads the change log itself, a page of at most
:data:`BACKLOG_PAGE` changes at a time and only as fast as it consumes them, until it is
back inside the window. So the feed's memory is the window, whatever the number of
subscribers or the events they were sent, and a subscriber's is one page at most.
Catching up from the log is also bounded in time: all the subscribers doing it share
:data:`CATCH_UP_RATE` changes a second (after a burst), so a crowd subscribing from far
back cannot take the CPU from writers and readers.

A subscriber asks for the changes after a revision and receives every change after it
exactly once, in revision order, whatever the feed did meanwhile. The feed never drops a
subscriber for being slow; what a slow *socket* costs is bounded by the adapter that owns
it (the WebSocket closes a subscriber whose socket stops draining, with the revision to
resume after). The feed ends its subscriptions early only when it cannot serve them
without a gap: :class:`FeedRestarted` when the store went back (restored from an older
backup) and :class:`SubscriberTooSlow` when the store's log was trimmed past the feed;
both say the revision to resume after.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence

from features_gql.api import MAX_PAGE_SIZE, FeaturesAPI
from features_gql.domain import ChangeEvent
from features_gql.errors import FeaturesError, InvalidInput
from features_gql.replication.follower import (
    Backoff,
    Follower,
    FollowerStatus,
    LoadReason,
    Source,
)
from features_gql.replication.store_source import StoreSource

log = logging.getLogger("features_gql.feed")

#: Seconds between two reads of the change log while anyone subscribes. Changes made
#: through this process arrive at once; this bounds the delay of the others.
POLL_INTERVAL = 0.05
#: Changes the feed keeps in memory for all its subscribers together.
RETAIN = 4096
#: Changes a subscriber reads from the change log at a time while it catches up: the
#: most it holds in memory of its own.
BACKLOG_PAGE = 200
#: The longest wait between two attempts while the store fails.
MAX_BACKOFF = 2.0
#: Changes a second that all the subscribers reading the change log (catching up) may
#: take together, after a burst of :data:`CATCH_UP_BURST`: what a crowd of clients
#: subscribing from far back (or stalling, so that their buffers fill) may cost the
#: service, whose writers and readers keep the rest. Live changes are not counted.
CATCH_UP_RATE = 10_000
CATCH_UP_BURST = 20_000


class SubscriberTooSlow(FeaturesError):
    """The subscription ended before it could miss anything. Subscribing again with
    ``after=resume_after`` continues exactly where it stopped."""

    code = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, resume_after: int) -> None:
        super().__init__(f"subscriber too slow; resume with after={resume_after}")
        self.resume_after = resume_after


class FeedRestarted(SubscriberTooSlow):
    """The store went back (restored from an older backup): the feed started again, and
    its subscribers resume on their own, each deciding what its revision now means."""

    def __init__(self, resume_after: int) -> None:
        FeaturesError.__init__(
            self, f"the change log went back (store restored?); resume with after={resume_after}"
        )
        self.resume_after = resume_after


def _revision(change: ChangeEvent) -> int:
    return change.revision


class CatchUpBudget:
    """A token bucket of changes, shared by every subscriber catching up from the log."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    async def take(self, changes: int) -> None:
        """Wait until ``changes`` may be taken, then take them (the balance may go below
        zero by one page: the next taker waits for it)."""
        while changes > 0:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens > 0:
                self._tokens -= changes
                return
            await asyncio.sleep(-self._tokens / self.rate)


class ChangeFeed:
    """Follows the changes of ``api``'s store for its subscribers (see the module)."""

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        poll_interval: float = POLL_INTERVAL,
        batch: int = MAX_PAGE_SIZE,
        retain: int = RETAIN,
        backlog_page: int = BACKLOG_PAGE,
    ) -> None:
        if retain < 1 or backlog_page < 1 or batch < 1:
            raise ValueError("retain, backlog_page and batch must be positive")
        #: What catching up from the change log may take, for all subscribers together.
        self.catch_up = CatchUpBudget(CATCH_UP_RATE, CATCH_UP_BURST)
        self.api = api
        self.poll_interval = poll_interval
        self.batch = batch
        self.retain = retain
        self.backlog_page = backlog_page
        #: The revision of the last change the feed read (None while it does not run).
        self.head: int | None = None
        #: The window: the latest changes, in revision order, every one after ``_floor``.
        self._window: deque[ChangeEvent] = deque()
        self._floor = 0
        #: How many changes ever left the window: a change's place in the feed is this
        #: plus its index, which stays true while the window moves on.
        self._left = 0
        #: Set, then cleared at once, whenever changes arrive or subscriptions must end.
        self._arrived = asyncio.Event()
        #: Bumped when every subscription must end; ``_ended`` says how.
        self._epoch = 0
        self._ended: type[SubscriberTooSlow] = SubscriberTooSlow
        self._subscribers = 0
        self._stopped = False
        #: Subscribers closed by their adapter for not keeping up, since the start (for
        #: metrics): see :meth:`dropped_one`.
        self.dropped = 0
        #: Reads the change log into the window while anyone subscribes: woken at once by
        #: this process's writes and by the store's pushed notices, else it polls.
        self._follower = Follower(
            StoreSource(api, interval=poll_interval, batch=batch, wake_on_writes=True),
            self,
            name="the change feed",
            backoff=Backoff(0.05, MAX_BACKOFF),
            logger=log,
        )

    @property
    def subscribers(self) -> int:
        return self._subscribers

    @property
    def retained(self) -> int:
        """How many changes the window holds now."""
        return len(self._window)

    def dropped_one(self) -> None:
        """An adapter closed a subscriber that did not keep up."""
        self.dropped += 1

    @property
    def status(self) -> FollowerStatus:
        """The status of the feed's follower of the change log."""
        return self._follower.status

    async def stop(self) -> None:
        """End every subscription (each ends as if complete) and stop following the store."""
        self._stopped = True
        self._arrived.set()
        self._arrived.clear()
        await self._follower.stop()

    async def subscribe(
        self, after: int | None = None, *, type: str | None = None, feature: str | None = None
    ) -> AsyncGenerator[ChangeEvent, None]:
        """Every change after revision ``after`` (None: from now on), in revision order,
        keeping only those of resource type ``type`` and feature ``feature`` when given.

        Raises :class:`~features_gql.errors.InvalidInput` when ``after`` is past the
        store's revision, :class:`~features_gql.errors.ChangesTrimmed` when the change log
        no longer holds the changes after ``after``, :class:`SubscriberTooSlow` (or
        :class:`FeedRestarted`) when the feed cannot go on without a gap, and store errors
        met while reading the change log.
        """
        revision = await self.api.revision()
        if after is not None and after > revision:
            # A position the store never reached would start the feed in the future.
            raise InvalidInput(
                "after", "range", f"after must be at most the store's revision {revision}"
            )
        cursor = revision if after is None else after

        def wanted(change: ChangeEvent) -> bool:
            # A catalog change (define, archive) names no resource: a type filter drops it.
            return (
                type is None or (change.resource is not None and change.resource.type == type)
            ) and (feature is None or change.feature == feature)

        self._subscribers += 1
        try:
            while not self._stopped:
                if self.head is None or cursor < self._floor:
                    # Not in the window: read the change log, one page at a time, within
                    # the budget every subscriber catching up shares.
                    changes = await self.api.changes_since(cursor, limit=self.backlog_page)
                    await self.catch_up.take(len(changes))
                    for change in changes:
                        cursor = change.revision
                        if wanted(change):
                            yield change
                    if len(changes) < self.backlog_page:
                        if self.head is None:
                            # The first subscriber starts the feed where the log ends.
                            self._start(cursor)
                        elif cursor < self._floor:
                            # The log ends before the window starts: the store went back.
                            log.warning(
                                "the change log went back (store restored?): the change feed "
                                "restarts"
                            )
                            self._end(FeedRestarted)
                            self._stop_following()
                            raise FeedRestarted(cursor)
                    continue
                # In the window: step through it, and wait at its end for more.
                epoch = self._epoch
                place = self._left + bisect.bisect_right(self._window, cursor, key=_revision)
                while epoch == self._epoch and not self._stopped:
                    index = place - self._left
                    if index < 0:
                        break  # the window moved past this subscriber: read the log
                    if index < len(self._window):
                        change = self._window[index]
                        place += 1
                        cursor = change.revision
                        if wanted(change):
                            yield change
                        continue
                    await self._arrived.wait()
                if epoch != self._epoch and not self._stopped:
                    raise self._ended(cursor)
        finally:
            self._subscribers -= 1
            if not self._subscribers and self.head is not None:
                self._stop_following()

    def _start(self, revision: int) -> None:
        self.head = self._floor = revision
        self._window.clear()
        self._follower.start()

    def _stop_following(self) -> None:
        """Stop following and let go of the window: the next subscriber starts again from
        its own position (a head left behind could fall out of a trimmed log)."""
        self._follower.cancel()
        self._left += len(self._window)
        self._window.clear()
        self.head = None

    def _end(self, how: type[SubscriberTooSlow]) -> None:
        """End every subscription (each raises ``how`` with its revision)."""
        self._ended = how
        self._epoch += 1
        self._left += len(self._window)
        self._window.clear()
        self._arrived.set()
        self._arrived.clear()

    # -- the window is the feed follower's sink ---------------------------------------

    @property
    def position(self) -> int | None:
        return self.head

    async def continues(self, source: Source) -> bool:
        return True

    async def load(self, source: Source, reason: LoadReason) -> None:
        """The change log cannot be continued from the window: trimmed past it (the store
        was unreachable for long) or gone back behind it (restored from an older backup).
        No one can be served without a gap, so every subscription ends, each with the
        revision to resume after, and the window starts again where the log is now."""
        if reason == "trimmed":
            log.warning("the change feed fell behind the retained change log; resuming")
        self._end(FeedRestarted if reason in ("went-back", "history") else SubscriberTooSlow)
        self.head = self._floor = await source.revision()

    async def apply(self, changes: Sequence[ChangeEvent]) -> None:
        window = self._window
        window.extend(changes)
        self.head = changes[-1].revision
        while len(window) > self.retain:
            self._floor = window.popleft().revision
            self._left += 1
        self._arrived.set()
        self._arrived.clear()
