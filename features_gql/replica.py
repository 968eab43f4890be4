"""An in-process copy of the assignments, for reads that cost about a dict lookup.

The embedded deployment (the application keeps the flags in its own database) reads
flags on its hot path; going through the store for each check costs microseconds to
milliseconds. A :class:`LocalReplica` loads the change log once and then follows it,
so a check is a set lookup in the application's own memory. It is never wrong about
what it has seen, and stale by at most the poll interval; if the store goes down it
keeps answering from its copy and reports how stale that copy is.

    replica = LocalReplica(api, interval=1.0)
    await replica.start()
    if replica.has("pipeline", pipeline_id, "speedups"): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from features_gql.api import FeaturesAPI
from features_gql.domain import ChangeEvent
from features_gql.errors import StoreError

log = logging.getLogger("features_gql.replica")


class LocalReplica:
    def __init__(self, api: FeaturesAPI, *, interval: float = 1.0, batch: int = 1000) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.api = api
        self.interval = interval
        self.batch = batch
        self._assigned: set[tuple[str, str, str]] = set()
        self._revision = 0
        self._synced_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def has(self, type: str, id: str, feature: str) -> bool:
        """Whether the resource had the feature as of :attr:`revision`. Unknown names,
        valid or not, are simply absent: this path does no validation, for speed."""
        return (type, id, feature) in self._assigned

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
        # Only add and remove change an assignment; catalog changes (define, archive)
        # and any kind a later version logs only move the revision on.
        if change.resource is not None and change.op in ("add", "remove"):
            key = (change.resource.type, change.resource.id, change.feature)
            if change.op == "add":
                self._assigned.add(key)
            else:
                self._assigned.discard(key)
        self._revision = change.revision

    async def refresh(self) -> int:
        """Apply every change after :attr:`revision`; returns how many were applied."""
        applied = 0
        while True:
            changes = await self.api.changes_since(self._revision, limit=self.batch)
            for change in changes:
                self.apply(change)
            applied += len(changes)
            if len(changes) < self.batch:
                break
        self._synced_at = time.monotonic()
        self.last_error = None
        return applied

    async def start(self) -> None:
        """Load the copy (raises if the store cannot answer), then follow the change log."""
        await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="features-gql-replica")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except StoreError as exc:
                if self.last_error is None:
                    log.warning("replica cannot follow the store, answering from its copy: %s", exc)
                self.last_error = str(exc)
