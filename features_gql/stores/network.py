"""What every store over a database server shares (the bundled ``mongodb`` and
``postgres``; any plugin of the kind).

Such a store starts while its database is down, fails fast and typed while it is down,
and recovers when it returns, without a restart. The rules that make it so are kept
here, once, and proven by the contract suite's :class:`NetworkStoreContract`
(``features_gql.testing``):

* :class:`SetUpOnce`: the set-up (tables, indexes, counters) runs on the first call that
  reaches the server, one attempt shared by every caller waiting for it, and again
  after something it made went missing;
* :func:`retry_conflicts`: a write that conflicts with a concurrent one is retried with
  jittered exponential backoff, within a budget, then fails as
  :class:`~features_gql.errors.StoreConflict`;
* :class:`PushedChanges`: the channel behind :meth:`Store.watch
  <features_gql.stores.Store.watch>`, reopened with backoff whenever it is lost, and a
  notice to catch up after each reopening; :class:`PushingStore` serves ``watch`` and
  ``watching`` from it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from features_gql.backoff import Backoff
from features_gql.errors import StoreConflict
from features_gql.stores.base import Store

log = logging.getLogger("features_gql.stores")

T = TypeVar("T")

#: Waits between attempts of a write that conflicted: jittered, doubling from 2 ms up to
#: 50 ms, so that writers in several processes do not collide again in lockstep.
CONFLICT_BACKOFF = Backoff(0.002, 0.05)
#: Waits between attempts to reopen a lost channel of pushed changes: 0.5 to 1 s at
#: first, doubling up to 30 s.
RECONNECT_BACKOFF = Backoff(1.0, 30.0, floor=0.5)
#: The longest closing a store waits for its channel of pushed changes to let go.
STOP_SECONDS = 2.0


class OneAtATime:
    """A coroutine run in the background, one run at a time.

    A failure that no caller awaited (each may have given up at its deadline) is
    retrieved here, not reported by asyncio as never retrieved.
    """

    def __init__(self, work: Callable[[], Awaitable[None]]) -> None:
        self._work = work
        self._run: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Future[None]:
        """The run under way, or a new one."""
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(self._work())
            self._run.add_done_callback(_retrieve)
        return self._run

    def cancel(self) -> None:
        run, self._run = self._run, None
        if run is not None and not run.done():
            run.cancel()


def _retrieve(run: asyncio.Future[None]) -> None:
    if not run.cancelled():
        run.exception()


class SetUpOnce:
    """A store's set-up, run on the first call that reaches its server.

    ``await set_up()`` returns at once once the set-up succeeded. Until then, concurrent
    callers share one attempt, and its failure: while the server is down they fail
    together instead of each waiting out a connection of its own. The attempt is
    shielded: a caller that hits its deadline does not cancel it for the others.
    """

    def __init__(self, set_up: Callable[[], Awaitable[None]]) -> None:
        self._set_up = set_up
        self._attempt = OneAtATime(self._run)
        self.ready = False

    async def __call__(self) -> None:
        if not self.ready:
            await asyncio.shield(self._attempt.start())

    async def _run(self) -> None:
        await self._set_up()
        self.ready = True

    def again(self) -> None:
        """Set up again on the next call: something the set-up made went missing."""
        self.ready = False

    def cancel(self) -> None:
        """Forget the set-up, and stop an attempt under way (the store closes)."""
        self.ready = False
        self._attempt.cancel()


async def retry_conflicts(
    op: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    conflict: Callable[[Exception, int], str | None],
    budget: float,
    logger: logging.Logger = log,
    backoff: Backoff = CONFLICT_BACKOFF,
) -> T:
    """``attempt()``, again while it fails with a conflict, for up to ``budget`` seconds.

    ``conflict(error, attempts)`` says why an error is a conflict worth another attempt
    (a short reason for the debug log), or None for an error to raise as it is. Past the
    budget, the conflict is raised as :class:`StoreConflict`.
    """
    give_up = time.monotonic() + budget
    for attempts in itertools.count(1):
        try:
            return await attempt()
        except Exception as exc:
            why = conflict(exc, attempts)
            if why is None:
                raise
            if time.monotonic() >= give_up:
                raise StoreConflict(
                    f"{op} kept conflicting with concurrent writes ({attempts} attempts, {why})"
                ) from exc
        logger.debug("%s conflicted (attempt %d, %s); retrying", op, attempts, why)
        await asyncio.sleep(backoff.delay(attempts))
    raise AssertionError("unreachable")  # pragma: no cover


#: A store's side of :class:`PushedChanges`: ``follow(opened, changed)`` opens the
#: channel, calls ``opened(revision)`` with the latest revision once it is open, then
#: calls ``changed(revision, catalog)`` for every notice until the channel is lost,
#: which it raises. It returns only when the store cannot push at all (its database
#: cannot, or it may not): then readers poll, and nothing reopens the channel. It closes
#: what it opened, within :data:`STOP_SECONDS`.
Follow = Callable[[Callable[[int], None], Callable[[int, bool], None]], Awaitable[None]]


@dataclass(eq=False)
class PushedChanges:
    """The channel of pushed changes behind a store's ``watch``, kept open by one task.

    Each time the channel is (re)opened, the listener is told to catch up (the latest
    revision, and ``catalog`` True): notices sent while it was closed reached no one.
    A lost channel is reopened with backoff, until the store closes (:meth:`stop`);
    meanwhile ``watching`` is False, so readers poll at their usual pace.
    """

    #: The store's side (see :data:`Follow`).
    follow: Follow
    #: The task's name, and what the channel does, for the log ("listening for pushed
    #: changes": "stopped listening for pushed changes", "... again").
    name: str
    what: str
    logger: logging.Logger = log
    #: Applied to an error before it is logged (a store's passwords).
    redact: Callable[[str], str] = str
    backoff: Backoff = RECONNECT_BACKOFF
    watching: bool = field(default=False, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def start(self, changed: Callable[[int, bool], None]) -> bool:
        """Keep the channel open for ``changed`` (a second listener is not taken)."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep_open(changed), name=self.name)
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Bounded: closing must not wait on a server that stopped answering.
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_SECONDS)

    async def _keep_open(self, changed: Callable[[int, bool], None]) -> None:
        failures = 0

        def opened(revision: int) -> None:
            nonlocal failures
            self.watching = True
            if failures:
                self.logger.info("%s again", self.what)
            failures = 0
            changed(revision, True)

        while True:
            try:
                await self.follow(opened, changed)
                return  # the store cannot push: readers poll
            except Exception as exc:  # lost, or down: poll meanwhile, and open it again
                failures += 1
                if failures == 1:
                    self.logger.warning(
                        "stopped %s (readers poll meanwhile): %s",
                        self.what,
                        self.redact(f"{type(exc).__name__}: {exc}"),
                    )
            finally:
                self.watching = False
            await asyncio.sleep(self.backoff.delay(failures))


class PushingStore(Store):
    """A store whose database tells it of every commit: ``watch`` and ``watching`` are
    those of the :class:`PushedChanges` its ``__init__`` sets as ``pushed`` (and its
    ``close`` stops)."""

    pushed: PushedChanges

    async def watch(self, changed: Callable[[int, bool], None]) -> bool:
        return self.pushed.start(changed)

    @property
    def watching(self) -> bool:
        return self.pushed.watching
