"""An in-process copy of the assignments, for reads that cost about a dict lookup.

The embedded deployment (the application keeps the flags in its own database) reads
flags on its hot path; going through the store for each check costs microseconds to
milliseconds. A :class:`LocalReplica` loads the change log once and then follows it,
so a check is a set lookup in the application's own memory. It is never wrong about
what it has seen, and stale by at most the poll interval; if the store goes down it
keeps answering from its copy and reports how stale that copy is.

    replica = LocalReplica(api, interval=1.0)
    await replica.start()
    if replica.has(("pipeline", pipeline_id), "speedups"): ...
    await replica.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from features_gql.api import FeaturesAPI
from features_gql.domain import ChangeEvent, Resource
from features_gql.errors import StoreError

log = logging.getLogger("features_gql.replica")

#: See :attr:`LocalReplica.listeners`.
ReplicaListener = Callable[[Sequence[ChangeEvent], StoreError | None], None]


class LocalReplica:
    def __init__(self, api: FeaturesAPI, *, interval: float = 1.0, batch: int = 1000) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.api = api
        self.interval = interval
        self.batch = batch
        #: The features of each resource, keyed by (type, id).
        self._features: dict[tuple[str, str], set[str]] = {}
        self._revision = 0
        self._synced_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        #: Told the outcome of every attempt to catch up with the store, on the replica's
        #: event loop: ``listener(changes, None)`` with the changes applied (often none),
        #: or ``listener((), error)`` with the error that stopped a follow-up. Listeners
        #: must be quick; one that raises is logged and the others still run.
        self.listeners: list[ReplicaListener] = []

    def has(self, resource: Resource | tuple[str, str], feature: str) -> bool:
        """Whether ``resource`` had ``feature`` as of :attr:`revision`; the arguments are
        those of :meth:`FeaturesAPI.has`. Unknown names, valid or not, are simply absent:
        this path does no validation, for speed."""
        key = (resource.type, resource.id) if isinstance(resource, Resource) else resource
        features = self._features.get(key)
        return features is not None and feature in features

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
        key = (change.resource.type, change.resource.id)
        if change.op == "add":
            self._features.setdefault(key, set()).add(change.feature)
        else:
            features = self._features.get(key)
            if features is not None:
                features.discard(change.feature)
                if not features:
                    del self._features[key]
        self._revision = change.revision

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
                self._tell((), exc)
