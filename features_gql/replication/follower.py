"""The one follower every copy is built on: a *source* of changes, a *sink* that holds the
copy, and one loop between them.

Every copy the project keeps — the live feed's window, :class:`~features_gql.replica.
LocalReplica`'s set, the catalog view, an edge's store — is the same problem: load the
source's state, then apply its changes in order, resume after a revision, and cope when
the source cannot simply be continued. :class:`Follower` alone solves it:

- **snapshot, then tail.** A sink with no position (or one that asks for it) is loaded
  from the source (:meth:`Sink.load`), then fed the batches :meth:`Source.follow` yields
  from the sink's position on;
- **reload instead of guessing**, when the source's change log no longer holds the
  position (:class:`~features_gql.errors.ChangesTrimmed`), when the source went back
  behind the copy (:class:`SourceWentBack`: restored from an older backup), or when the
  sink finds the source's history is not the one it saw (:meth:`Sink.continues`). A source
  that demands a reload again right after one is refused as malformed, not obeyed in a
  loop;
- **validated at the boundary**: every batch must continue the copy (revisions increasing,
  each past the position: :func:`~features_gql.replication.wire.check_sequence`); a batch
  that does not is never applied in part;
- **backoff with jitter** while the source fails, longer for a source that answers what
  the follower refuses (it will most likely answer the same again), and none for a source
  that asks to be resumed at once;
- **one status** (:class:`FollowerStatus`): the revision the copy reflects, the source's,
  how stale the copy may be, the state, the last error. ``syncStatus``, ``/readyz`` and
  the metrics read it; the log has one line per change of state, never one per retry.

Nothing else reads a change log in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from features_gql.backoff import Backoff as Backoff  # where followers' callers find it
from features_gql.domain import ChangeEvent
from features_gql.errors import (
    ChangesTrimmed,
    FeaturesError,
    MalformedUpstream,
    StoreError,
    UpstreamRefused,
    UpstreamUnavailable,
)
from features_gql.replication import wire

log = logging.getLogger("features_gql.replication")

T = TypeVar("T")

#: What a follower is doing: ``connecting`` (never reached its source yet), ``following``
#: (no error), ``unreachable`` (the source cannot be reached or cannot answer),
#: ``refused`` (it refuses the follower's credentials), ``malformed`` (it answered
#: something the follower refuses to apply: see ``last_error``), ``failing`` (the sink
#: failed, or a bug). In every state but the first the copy is served as it is.
FollowerState = Literal["connecting", "following", "unreachable", "refused", "malformed", "failing"]

#: Why a sink is loaded.
LoadReason = Literal["start", "trimmed", "went-back", "history"]

#: How the log says the follower entered each state.
CONDITIONS: dict[FollowerState, str] = {
    "connecting": "is connecting",
    "following": "is following",
    "unreachable": "lost its source",
    "refused": "is refused by its source",
    "malformed": "refuses what its source answered, applying nothing of it",
    "failing": "failed",
}

#: Seconds connected with no error before a follower that failed counts as recovered.
RECOVERED_AFTER = 1.0


class SourceWentBack(StoreError):
    """The source is behind the copy: it lost data or was restored from an older backup."""

    def __init__(self, source_revision: int, copy_revision: int) -> None:
        super().__init__(
            f"the source is at revision {source_revision}, behind the copy's {copy_revision}: "
            "it lost data or was restored from an older backup"
        )
        self.source_revision = source_revision


class ResumeAtOnce(StoreError):
    """The source ended the stream but may be resumed at once (a subscriber the source
    closed for being slow): no backoff, no change of state."""


class Source(Protocol):
    """Where changes come from: a store's change log, or an upstream service."""

    def describe(self) -> str: ...

    async def revision(self) -> int:
        """The source's revision now."""
        ...

    def follow(self, after: int) -> AsyncGenerator[Sequence[ChangeEvent], None]:
        """Batches of the changes after ``after``, in order, as they come; an empty batch
        says the source was caught up with at that moment. Ends when the source ends for
        good (the service shuts down); raises :class:`~features_gql.errors.ChangesTrimmed`,
        :class:`SourceWentBack`, :class:`ResumeAtOnce` or the source's own errors."""
        ...


class Sink(Protocol):
    """What holds a copy."""

    @property
    def position(self) -> int | None:
        """The source revision the copy reflects; None until it is loaded."""
        ...

    async def load(self, source: Source, reason: LoadReason) -> None:
        """Make the copy the source's state now (and set :attr:`position`)."""
        ...

    async def apply(self, changes: Sequence[ChangeEvent]) -> None:
        """Apply a batch that continues the copy (checked already)."""
        ...

    async def continues(self, source: Source) -> bool:
        """Whether the copy can be continued from the source as it is (the source's
        history is the copy's); False loads it anew."""
        ...


class SinkFailed(Exception):
    """The sink (the copy's own store or file) failed: not the source's fault. Raised by
    the follower for a store or OS error of :meth:`Sink.apply`, and by a sink's
    :meth:`Sink.load` for one of its own store (any other error of a load is the
    source's)."""


#: The waits between a follower's attempts, by default; and after a source answered
#: something the follower refused, which it will most likely answer again for a while.
BACKOFF = Backoff(0.1, 5.0)
MALFORMED_BACKOFF = Backoff(1.0, 30.0, floor=0.5)

#: Told the outcome of every step: ``(changes applied, None)`` — often none, when the
#: source was just found caught up with — or ``((), error)`` when following failed.
OutcomeListener = Callable[[Sequence[ChangeEvent], Exception | None], None]


@dataclass
class FollowerStatus:
    """One follower's status: what ``syncStatus``, ``/readyz`` and the metrics read."""

    source: str
    state: FollowerState = "connecting"
    #: The source revision the copy reflects (None before the first load).
    revision: int | None = None
    #: The source's revision, as last heard.
    source_revision: int | None = None
    last_error: str | None = None
    #: Attempts that failed, and loads done (the first one included).
    reconnects: int = 0
    loads: int = 0
    #: Monotonic time the copy was last known to be current (None: never).
    synced_at: float | None = None
    #: Whether the copy is known to be current now.
    caught_up: bool = False

    @property
    def connected(self) -> bool:
        return self.state == "following"

    @property
    def lag_seconds(self) -> float | None:
        """Seconds the copy may be behind its source: 0 while caught up."""
        if self.connected and self.caught_up:
            return 0.0
        return None if self.synced_at is None else time.monotonic() - self.synced_at


class Follower:
    """Keeps ``sink`` a copy of ``source`` (see the module).

    ``name`` says which copy it is in the log. ``tail=False`` only loads: for a copy that
    something else keeps current (the catalog view of a store no other process writes).
    """

    def __init__(
        self,
        source: Source,
        sink: Sink,
        *,
        name: str,
        backoff: Backoff = BACKOFF,
        malformed_backoff: Backoff = MALFORMED_BACKOFF,
        tail: bool = True,
        logger: logging.Logger = log,
    ) -> None:
        self.source = source
        self.sink = sink
        self.name = name
        self.backoff = backoff
        self.malformed_backoff = malformed_backoff
        self.tail = tail
        self.log = logger
        self.status = FollowerStatus(source.describe())
        #: See :data:`OutcomeListener`; a listener that raises is logged, the others run.
        self.listeners: list[OutcomeListener] = []
        #: Set once the first attempt to load has ended, loaded or not.
        self.attempted = asyncio.Event()
        self._logged: FollowerState = "connecting"
        self._recovery: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Why the sink must be loaded before following again (None: it need not).
        self._reload: LoadReason | None = None
        #: Set by a load, cleared once a batch is applied or the source was caught up
        #: with after it: a source that demands another load at once is refused.
        self._just_loaded = False
        #: Whether the current attempt applied something or caught up with its source.
        self._progressed = False

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self.run(), name=f"features-gql-{self.name.replace(' ', '-')}"
            )

    def cancel(self) -> None:
        """Stop following without waiting for the loop to end (it ends at its next step)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None

    async def wait_until(self, revision: int, within: float) -> bool:
        """Whether the copy reached ``revision`` of the source within ``within`` seconds."""
        position = self.sink.position
        if position is not None and position >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, future)
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

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Follow until the source ends for good (or the task is cancelled)."""
        failures = 0
        while True:
            self._progressed = False
            try:
                if await self._attempt():
                    return
                continue
            except ResumeAtOnce as exc:
                self.status.reconnects += 1
                if self._progressed:
                    continue
                self._lost(str(exc), "unreachable", exc)
                failures, backoff = failures + 1, self.backoff
            except ChangesTrimmed as exc:
                if self._refuse_reload(f"its change log no longer holds the copy's: {exc}"):
                    failures, backoff = failures + 1, self.malformed_backoff
                else:
                    self._reload = "trimmed"
                    continue
            except SourceWentBack as exc:
                if self._refuse_reload(str(exc)):
                    failures, backoff = failures + 1, self.malformed_backoff
                else:
                    self.log.warning("%s: %s; loading the copy again", self.name, exc)
                    self._reload = "went-back"
                    continue
            except MalformedUpstream as exc:
                self._just_loaded = False
                self._lost(str(exc), "malformed", exc)
                failures, backoff = failures + 1, self.malformed_backoff
            except UpstreamUnavailable as exc:
                # An upstream that went away since the load: what it asks for once back (a
                # reload, after a restore) is no demand repeated at once, and the backoff
                # paces it anyway.
                self._just_loaded = False
                if exc.resume_at_once and self._progressed:
                    # Closed for falling behind after following for a while: a routine
                    # resume, at once. One that makes no progress is backed off below.
                    self.status.reconnects += 1
                    continue
                self._lost(str(exc), "unreachable", exc)
                failures, backoff = failures + 1, self.backoff
            except UpstreamRefused as exc:
                # Refused credentials need an operator; the copy is served meanwhile.
                self._lost(str(exc), "refused", exc)
                failures, backoff = failures + 1, self.backoff
            except SinkFailed as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
                self._lost(f"{type(cause).__name__}: {cause}", "failing", cause)
                failures, backoff = failures + 1, self.backoff
            except StoreError as exc:
                self._lost(str(exc), "unreachable", exc)
                failures, backoff = failures + 1, self.backoff
            except Exception as exc:  # the follower outlives bugs too: log, back off, retry
                self._lost(f"{type(exc).__name__}: {exc}", "failing", exc)
                failures, backoff = failures + 1, self.backoff
            finally:
                self.attempted.set()
            if self._progressed:
                # It followed for a while before this failure: back off from the start,
                # not from where the last run of failures left the wait.
                failures = 1
            self.status.reconnects += 1
            await asyncio.sleep(backoff.delay(failures))

    def _refuse_reload(self, reason: str) -> bool:
        """Whether a demand to load again comes right after a load (then it is refused:
        the source is not sane, and obeying would load in a loop)."""
        if not self._just_loaded:
            return False
        self._just_loaded = False
        self._lost(f"it asks for another load right after one: {reason}", "malformed")
        return True

    async def _attempt(self) -> bool:
        """Load if need be, then follow; True when the source ended for good."""
        source, sink, status = self.source, self.sink, self.status
        reason = self._reload
        position = sink.position
        if reason is None and position is None:
            reason = "start"  # the load reads where the source is
        if reason is None:
            assert position is not None
            source_revision = await source.revision()
            status.source_revision = source_revision
            if source_revision < position:
                # Not repeated at every retry while the load it asks for is refused.
                self.log.log(
                    logging.DEBUG if status.state == "malformed" else logging.WARNING,
                    "%s: the source is at revision %d, behind the copy's %d: it lost data or "
                    "was restored from an older backup; loading the copy again",
                    self.name,
                    source_revision,
                    position,
                )
                reason = "went-back"
            elif not await self._sink(sink.continues(source)):
                reason = "history"
        if reason is not None:
            if self._just_loaded:
                raise MalformedUpstream(
                    "revision",
                    f"the source asks for another load right after one ({reason}), at "
                    f"revision {status.source_revision}",
                )
            await self._load(reason)
        else:
            # A copy kept across restarts (an edge's) is continued, not loaded.
            status.revision = position
        self.attempted.set()
        self._connected()
        self._check_caught_up()
        self._tell((), None)
        if not self.tail:
            self._recovered()
            await asyncio.Event().wait()  # nothing to follow: kept current elsewhere
        position = sink.position
        assert position is not None
        # Closed here, whatever ends the loop: a source holds listeners while it follows.
        async with contextlib.aclosing(source.follow(position)) as batches:
            async for batch in batches:
                if batch:
                    wire.check_sequence(batch, position)
                    await self._sink(sink.apply(batch))
                    position = batch[-1].revision
                    status.revision = position
                    if status.source_revision is None or position > status.source_revision:
                        status.source_revision = position
                else:
                    status.source_revision = position
                self._just_loaded = False
                self._progressed = True
                self._check_caught_up()
                if batch:
                    self._recovered()
                else:
                    self._connected()
                self._wake_waiters(position)
                self._tell(batch, None)
        return True

    async def load(self) -> None:
        """Load the sink now, before following (raises what the load raises): for a copy
        that must hold the source's state before it is used."""
        await self._load("start")
        self._just_loaded = False
        self._connected()
        self._check_caught_up()
        self._tell((), None)

    async def catch_up(self) -> int:
        """Apply what the source holds past the copy now, without waiting for the loop:
        through the first moment the source is caught up with. Returns how many changes
        were applied."""
        position = self.sink.position
        if position is None:
            raise RuntimeError("load the copy before catching up")
        applied = 0
        stream = self.source.follow(position)
        try:
            async for batch in stream:
                if not batch:
                    break
                wire.check_sequence(batch, position)
                await self.sink.apply(batch)
                position = self.status.revision = batch[-1].revision
                applied += len(batch)
                self._wake_waiters(position)
                self._tell(batch, None)
        finally:
            await stream.aclose()
        return applied

    async def _load(self, reason: LoadReason) -> None:
        # Errors of the sink's own store while it loads are its to raise as SinkFailed:
        # a load reads the source, whose errors are the source's.
        await self.sink.load(self.source, reason)
        self._reload = None
        self._just_loaded = True
        status = self.status
        status.loads += 1
        status.revision = self.sink.position
        if status.revision is not None and (
            status.source_revision is None or status.source_revision < status.revision
        ):
            status.source_revision = status.revision  # where the source was, as loaded

    @staticmethod
    async def _sink(work: Awaitable[T]) -> T:
        try:
            return await work
        except (UpstreamUnavailable, MalformedUpstream):
            # An upstream's failures, whatever asked it: a sink that reads its source (an
            # edge comparing histories in Sink.continues) fails because of the source.
            raise
        except (StoreError, OSError) as exc:
            raise SinkFailed(str(exc)) from exc

    # -- status -----------------------------------------------------------------------

    def _check_caught_up(self) -> None:
        status = self.status
        if status.revision is not None and status.source_revision is not None:
            status.caught_up = status.revision >= status.source_revision
            if status.caught_up:
                status.synced_at = time.monotonic()

    def _connected(self) -> None:
        """Connected (again): following at once the first time; after a failure, once
        something is applied or :data:`RECOVERED_AFTER` seconds pass without an error, so
        a source that fails every attempt right after connecting does not flap."""
        if self.status.last_error is None:
            self._recovered()
        elif self._recovery is None and self.status.state != "following":
            loop = asyncio.get_running_loop()
            self._recovery = loop.call_later(RECOVERED_AFTER, self._recovered)

    def _recovered(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None
        if self.status.state == "following":
            return
        if self._logged != "connecting":
            self.log.warning("%s: following %s again", self.name, self.status.source)
        self._logged = self.status.state = "following"
        self.status.last_error = None

    def _lost(self, reason: str, state: FollowerState, exc: Exception | None = None) -> None:
        # One line per change of state, not per attempt: a follower refused by a broken
        # source for an hour logs a line, not thousands.
        if state != self._logged:
            if exc is not None and not isinstance(exc, FeaturesError | OSError):
                self.log.error(
                    "%s %s; answering from its copy meanwhile",
                    self.name,
                    CONDITIONS[state],
                    exc_info=exc,
                )
            else:
                self.log.warning(
                    "%s %s; answering from its copy meanwhile: %s",
                    self.name,
                    CONDITIONS[state],
                    reason,
                )
            self._logged = state
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None
        status = self.status
        if status.connected and status.caught_up:
            status.synced_at = time.monotonic()
        status.caught_up = False
        status.state = state
        status.last_error = reason
        self._tell((), exc if exc is not None else StoreError(reason))

    def _wake_waiters(self, position: int) -> None:
        for wanted, future in self._waiters:
            if wanted <= position and not future.done():
                future.set_result(None)

    def _tell(self, changes: Sequence[ChangeEvent], error: Exception | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(changes, error)
            except Exception:
                self.log.exception("%s: a listener raised; following carries on", self.name)
