"""The followers' sources in a process that has the store: its change log read through a
:class:`~features_gql.api.FeaturesAPI`, or the process's own change feed.

:class:`StoreSource` reads the change log after a position, a page at a time, and waits
between reads for whichever comes first: a write made through the same API (when asked
to), a notice the store pushed (PostgreSQL's ``LISTEN/NOTIFY``), or the poll interval —
the fallback that also brings the changes other processes made over a store that pushes
nothing. While it waits it checks, now and then, that the store did not go back behind
the position (restored from an older backup).

:class:`FeedSource` takes the changes from a :class:`~features_gql.feed.ChangeFeed` of
the same API instead, so a copy in a process that serves GraphQL receives each change
the moment the feed does, with no polling of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

from features_gql.api import MAX_PAGE_SIZE, FeaturesAPI
from features_gql.domain import ChangeEvent
from features_gql.errors import InvalidInput
from features_gql.replication.follower import ResumeAtOnce, SourceWentBack

if TYPE_CHECKING:
    from features_gql.feed import ChangeFeed

#: Seconds between two checks that the store did not go back behind the position, while
#: there is nothing new to read.
CHECK_EVERY = 1.0
#: The poll interval while the store pushes a notice of every commit: only a fallback for
#: a notice lost.
WATCHED_INTERVAL = 1.0


class StoreSource:
    """The change log of ``api``'s store (see the module).

    ``interval``: seconds between two reads while nothing wakes the source (jittered by
    a quarter either way, so that processes polling one database spread out).
    ``wake_on_writes``: a write through ``api`` wakes it at once. ``catalog_only``: only
    a pushed notice of a catalog change (define, archive) wakes it.
    """

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        interval: float,
        batch: int = MAX_PAGE_SIZE,
        wake_on_writes: bool = False,
        catalog_only: bool = False,
    ) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError("interval and batch must be positive")
        self.api = api
        self.interval = interval
        self.batch = batch
        self.wake_on_writes = wake_on_writes
        self.catalog_only = catalog_only

    def describe(self) -> str:
        return self.api.store.describe()

    async def revision(self) -> int:
        return await self.api.revision()

    async def follow(self, after: int) -> AsyncGenerator[Sequence[ChangeEvent], None]:
        api = self.api
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        position = after

        def written(revision: int) -> None:
            if revision > position:
                wake.set()

        def pushed(revision: int, catalog: bool) -> None:
            if revision > position and (catalog or not self.catalog_only):
                wake.set()

        if self.wake_on_writes:
            api.change_listeners.append(written)
        api.pushed_listeners.append(pushed)
        try:
            checked = loop.time()
            while True:
                # Cleared before the read: a wake while it runs is a change it may miss.
                wake.clear()
                changes = await api.changes_since(position, limit=self.batch)
                if changes:
                    position = changes[-1].revision
                    yield changes
                    if len(changes) == self.batch:
                        continue
                else:
                    now = loop.time()
                    if now - checked >= CHECK_EVERY:
                        checked = now
                        revision = await api.revision()
                        if revision < position:
                            raise SourceWentBack(revision, position)
                # The end of the log: caught up with, as of this read.
                yield ()
                interval = WATCHED_INTERVAL if api.pushed else self.interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(random.uniform(0.75, 1.25) * interval):
                        await wake.wait()
        finally:
            with contextlib.suppress(ValueError):
                api.pushed_listeners.remove(pushed)
            with contextlib.suppress(ValueError):
                api.change_listeners.remove(written)


class FeedSource:
    """The changes of ``feed`` (a change feed of ``api``), with ``api``'s revision checked
    every ``interval`` seconds with nothing new (to tell the copy is current, and that
    the store did not go back)."""

    def __init__(self, feed: ChangeFeed, api: FeaturesAPI, *, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.feed = feed
        self.api = api
        self.interval = interval

    def describe(self) -> str:
        return self.api.store.describe()

    async def revision(self) -> int:
        return await self.api.revision()

    async def follow(self, after: int) -> AsyncGenerator[Sequence[ChangeEvent], None]:
        # Imported here: the feed module builds on this package.
        from features_gql.feed import SubscriberTooSlow

        stream = self.feed.subscribe(after)
        position = after
        # One read of the stream stays pending across the checks: cancelling it would end
        # the subscription.
        pending: asyncio.Future[ChangeEvent] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(stream))
                done, _ = await asyncio.wait({pending}, timeout=self.interval)
                if not done:
                    revision = await self.api.revision()
                    if revision < position:
                        raise SourceWentBack(revision, position)
                    if revision == position:
                        yield ()
                    continue
                read, pending = pending, None
                try:
                    change = read.result()
                except StopAsyncIteration:
                    return  # the feed stopped: the service is shutting down
                except SubscriberTooSlow as exc:
                    raise ResumeAtOnce(str(exc)) from exc
                except InvalidInput as exc:
                    # The position is past the store's revision: the store went back.
                    raise SourceWentBack(await self.api.revision(), position) from exc
                position = change.revision
                yield (change,)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await stream.aclose()
