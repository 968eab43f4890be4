"""The follower's source at an edge: an upstream features-gql service, through its
:class:`~features_gql.upstream.UpstreamClient`.

:class:`UpstreamSource` follows the upstream's ``featureChanges`` subscription over
WebSocket, a change at a time. An upstream that serves no WebSocket (an application that
embeds features-gql without a change feed) is polled instead: its change log is read every
:data:`POLL_INTERVAL` seconds, and the subscription tried again every
:data:`RETRY_SUBSCRIPTION` seconds, so an upstream that gains one is followed by push
again. Either way the upstream's answers are parsed at the boundary
(:mod:`features_gql.replication.wire`); what it may do wrong beyond that (revisions out of
order, going back) is the follower's to refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Literal

from features_gql.domain import ChangeEvent
from features_gql.replication.follower import SourceWentBack
from features_gql.upstream import NoSubscriptions, UpstreamClient

log = logging.getLogger("features_gql.upstream")

#: Seconds between two polls of the upstream's change log when it serves no WebSocket
#: (jittered by half either way, so that edges polling one upstream spread out).
POLL_INTERVAL = 1.0
#: How often a source that polls tries the subscription again.
RETRY_SUBSCRIPTION = 60.0
#: Changes per read of the upstream's change log while polling.
POLL_BATCH = 1000

#: How the source follows the upstream now.
Mode = Literal["subscription", "polling"]


class UpstreamSource:
    """The changes of the upstream ``client`` talks to (see the module)."""

    def __init__(self, client: UpstreamClient) -> None:
        self.client = client
        self.mode: Mode = "subscription"
        #: Monotonic time after which a source that polls tries the subscription again.
        self._retry_subscription_at = 0.0

    def describe(self) -> str:
        return self.client.describe()

    async def revision(self) -> int:
        return await self.client.revision()

    async def follow(self, after: int) -> AsyncGenerator[Sequence[ChangeEvent], None]:
        position = after
        while True:
            if self.mode == "polling":
                # Closed with this generator: nothing is left reading the upstream.
                async with contextlib.aclosing(self._poll(position)) as polls:
                    async for batch in polls:
                        if batch:
                            position = batch[-1].revision
                        yield batch
                self.mode = "subscription"
            try:
                # Ends only with an error: the upstream ended it, or cannot be reached.
                async with contextlib.aclosing(self.client.subscribe(position)) as changes:
                    async for change in changes:
                        position = change.revision
                        yield (change,)
            except NoSubscriptions as exc:
                log.warning("following the upstream by polling: %s", exc)
                self.mode = "polling"
                self._retry_subscription_at = time.monotonic() + RETRY_SUBSCRIPTION

    async def _poll(self, after: int) -> AsyncGenerator[Sequence[ChangeEvent], None]:
        """The upstream's change log after ``after``, read until the subscription is due to
        be tried again."""
        position = after
        while time.monotonic() < self._retry_subscription_at:
            changes = await self.client.changes_since(position, limit=POLL_BATCH)
            if changes:
                position = changes[-1].revision
                yield changes
                continue  # more may be waiting: read again at once
            revision = await self.client.revision()
            if revision < position:
                raise SourceWentBack(revision, position)
            if revision == position:
                yield ()
            await asyncio.sleep(random.uniform(0.5, 1.5) * POLL_INTERVAL)
