"""Change-log retention: keep the latest N change events, trim the rest now and then.

Replicas load from snapshots, so the change log need not hold every change since the
beginning. A reader asking for changes older than what is kept gets ``RESYNC_REQUIRED``
(:class:`~features_gql.errors.ChangesTrimmed`), never a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from features_gql.api import FeaturesAPI
from features_gql.errors import StoreError

log = logging.getLogger("features_gql.retention")

#: Seconds between two trims: the log may exceed its bound by what is written in between.
TRIM_EVERY = 60.0


class Retention:
    """Trims the change log of ``api`` to its latest ``keep`` events every ``every`` seconds."""

    def __init__(self, api: FeaturesAPI, keep: int, *, every: float = TRIM_EVERY) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.api = api
        self.keep = keep
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def trim(self) -> int:
        removed = await self.api.trim_changes(self.keep)
        if removed:
            log.info(
                "change log trimmed", extra={"fields": {"removed": removed, "kept": self.keep}}
            )
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="features-gql-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.trim()
            except StoreError as exc:
                log.warning("could not trim the change log (retried later): %s", exc)
            await asyncio.sleep(self.every)
