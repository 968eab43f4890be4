"""The live change feed: every change after a revision, in order, then changes as they happen.

One :class:`ChangeFeed` per process follows the store's change log and fans each new
change out to its subscribers. It learns of changes two ways: a write through this
process's :class:`~features_gql.api.FeaturesAPI` wakes it at once, and it polls the
change log (every :data:`POLL_INTERVAL` seconds while anyone subscribes), which is how
changes made by other processes sharing the store (``--workers N``, several instances
on one database) reach this process's subscribers.

A subscriber asks for the changes after a revision. It first reads the backlog from the
change log itself, page by page, until it has caught up with the feed; only then does it
join the fan-out, skipping what it has already seen. So it receives every change after
its revision exactly once, in revision order, whatever the feed did meanwhile.

Each subscriber holds at most ``queue_limit`` changes in memory. One that cannot keep up
(a slow network, a stuck client) is dropped with :class:`SubscriberTooSlow`, which says
the revision to resume after: nothing is lost, and no memory is held for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator

from features_gql.api import MAX_PAGE_SIZE, FeaturesAPI
from features_gql.domain import ChangeEvent
from features_gql.errors import ChangesTrimmed, FeaturesError, StoreError

log = logging.getLogger("features_gql.feed")

#: Seconds between two reads of the change log while anyone subscribes. Changes made
#: through this process arrive at once; this bounds the delay of the others.
POLL_INTERVAL = 0.05
#: Changes one subscriber may have waiting before it is dropped.
QUEUE_LIMIT = 10_000
#: The longest wait between two attempts while the store fails.
MAX_BACKOFF = 2.0


class SubscriberTooSlow(FeaturesError):
    """The subscriber fell ``queue_limit`` changes behind and was dropped. Subscribing
    again with ``after=resume_after`` continues exactly where it stopped."""

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


class _Subscriber:
    __slots__ = ("closed", "overflowed", "queue", "ready", "restarted")

    def __init__(self) -> None:
        self.queue: deque[ChangeEvent] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False
        self.restarted = False
        self.closed = False


class ChangeFeed:
    """Fans the changes of ``api``'s store out to subscribers (see the module docstring)."""

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        poll_interval: float = POLL_INTERVAL,
        batch: int = MAX_PAGE_SIZE,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.api = api
        self.poll_interval = poll_interval
        self.batch = batch
        self.queue_limit = queue_limit
        #: The revision of the last change fanned out (None until the feed runs).
        self.head: int | None = None
        self._subscribers: set[_Subscriber] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        #: Subscribers dropped for being too slow, since the start (for metrics).
        self.dropped = 0
        api.change_listeners.append(self._changed)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _changed(self, revision: int) -> None:
        if self.head is not None and revision > self.head:
            self._wake.set()

    async def stop(self) -> None:
        """End every subscription (each ends as if complete) and stop following the store."""
        self._stopped = True
        for subscriber in self._subscribers:
            subscriber.closed = True
            subscriber.ready.set()
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def subscribe(
        self, after: int | None = None, *, type: str | None = None, feature: str | None = None
    ) -> AsyncIterator[ChangeEvent]:
        """Every change after revision ``after`` (None: from now on), in revision order,
        keeping only those of resource type ``type`` and feature ``feature`` when given.

        Raises :class:`~features_gql.errors.ChangesTrimmed` when the change log no longer
        holds the changes after ``after``, :class:`SubscriberTooSlow` when the subscriber
        fell too far behind, and store errors met while reading the backlog.
        """
        cursor = await self.api.revision() if after is None else after

        def wanted(change: ChangeEvent) -> bool:
            # A catalog change (define, archive) names no resource: a type filter drops it.
            return (
                type is None or (change.resource is not None and change.resource.type == type)
            ) and (feature is None or change.feature == feature)

        # The backlog, from the change log, until this subscriber has caught up with the feed.
        while not self._stopped:
            head = self.head
            if head is not None and cursor >= head and self._task is not None:
                break
            changes = await self.api.changes_since(cursor, limit=self.batch)
            for change in changes:
                cursor = change.revision
                if wanted(change):
                    yield change
            if len(changes) < self.batch and self.head is not None and cursor < self.head:
                # The log ends before the feed's head: the store went back.
                await self._restart()
                continue
            if len(changes) < self.batch and self.head is None:
                # The first subscriber starts the feed where its backlog ended.
                self.head = cursor
                self._task = asyncio.create_task(self._follow(), name="features-gql-feed")
        if self._stopped:
            return
        # Joined with no await since the check above: the feed fans out every change after
        # its head, and this subscriber has seen everything up to `cursor` >= head.
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        try:
            while True:
                while subscriber.queue:
                    change = subscriber.queue.popleft()
                    if change.revision <= cursor:
                        continue  # already read from the backlog
                    cursor = change.revision
                    if wanted(change):
                        yield change
                if subscriber.closed:
                    return
                if subscriber.restarted:
                    raise FeedRestarted(cursor)
                if subscriber.overflowed:
                    raise SubscriberTooSlow(cursor)
                subscriber.ready.clear()
                await subscriber.ready.wait()
        finally:
            self._subscribers.discard(subscriber)

    async def _restart(self) -> None:
        """Drop every subscriber and stop following: the next subscriber starts anew."""
        log.warning("the change log went back (store restored?): the change feed restarts")
        for subscriber in self._subscribers:
            subscriber.restarted = True
            subscriber.ready.set()
        self._subscribers.clear()
        task, self._task, self.head = self._task, None, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fan_out(self, changes: list[ChangeEvent]) -> None:
        for subscriber in list(self._subscribers):
            queue = subscriber.queue
            if len(queue) + len(changes) > self.queue_limit:
                # Dropped: it drains what it holds, then learns where to resume.
                subscriber.overflowed = True
                self._subscribers.discard(subscriber)
                self.dropped += 1
            else:
                queue.extend(changes)
            subscriber.ready.set()

    async def _follow(self) -> None:
        failures = 0
        checked = asyncio.get_running_loop().time()
        while True:
            if not self._subscribers:
                # No one listens: stop, and let the next subscriber start again from its
                # own position (a head left behind could fall out of a trimmed log).
                self.head = None
                self._task = None
                return
            head = self.head
            assert head is not None
            try:
                changes = await self.api.changes_since(head, limit=self.batch)
                failures = 0
            except ChangesTrimmed:
                # Behind the retained log (the store was unreachable for long): no one can
                # be served without a gap, so every subscriber resumes on its own.
                log.warning("the change feed fell behind the retained change log; resuming")
                for subscriber in list(self._subscribers):
                    subscriber.overflowed = True
                    subscriber.ready.set()
                self._subscribers.clear()
                self.head = await self._revision_or(head)
                continue
            except StoreError as exc:
                failures += 1
                if failures == 1:
                    log.warning("the change feed cannot read the change log (retrying): %s", exc)
                await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, 0.05 * 2**failures)))
                continue
            if changes:
                self.head = changes[-1].revision
                self._fan_out(changes)
            if len(changes) == self.batch:
                continue
            now = asyncio.get_running_loop().time()
            if not changes and now - checked > 1.0:
                checked = now
                if await self._revision_or(head) < head:
                    await self._restart()
                    return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()

    async def _revision_or(self, fallback: int) -> int:
        try:
            return await self.api.revision()
        except StoreError:
            return fallback
