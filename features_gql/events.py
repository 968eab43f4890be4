"""Operation events and the dispatcher that hands them to sinks off the request path."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("features_gql.events")


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which is
# measurable on the hot path (one event per store call). Treat events as read-only.
@dataclass(slots=True)
class OperationEvent:
    """One timed store operation.

    ``outcome`` is ``ok``, ``timeout``, ``unavailable``, ``conflict`` or ``error``
    (an unexpected exception). ``injected`` is true when a fault-injection store
    raised the failure on purpose, so a drill is never mistaken for an outage.

    The API builds one per store call by position, the cheapest way: new fields go last,
    with a default.
    """

    store: str
    op: str
    duration: float
    outcome: str
    resource: str | None = None
    feature: str | None = None
    items: int = 1
    request_id: str | None = None
    error: str | None = None
    injected: bool = False


OperationSink = Callable[[OperationEvent], None]


@dataclass
class SinkHealth:
    """Counts of what the dispatcher could not deliver."""

    failures: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


_STOP = object()


class EventDispatcher:
    """Delivers operation events to sinks on a background thread.

    A sink that is slow or raises must never slow or fail a request: the request
    path only puts the event on a bounded queue (dropping and counting when it is
    full), and each sink is called in isolation, its errors counted and logged
    once per sink rather than once per event.
    """

    def __init__(
        self,
        sinks: Sequence[tuple[str, OperationSink]],
        maxsize: int = 10_000,
        *,
        inline: Sequence[tuple[str, OperationSink]] = (),
        gate: Callable[[OperationEvent], bool] | None = None,
    ) -> None:
        self._sinks = list(sinks)
        #: Called on the request path: only for the project's own cheap, non-blocking
        #: sinks (metrics), never for plugins.
        self._inline = list(inline)
        #: When every background sink can say which events it wants, this says whether
        #: any of them wants an event; unwanted events never wake the sink thread.
        self._gate = gate
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self.health = SinkHealth()

    @property
    def sink_names(self) -> list[str]:
        return [name for name, _ in self._sinks]

    def start(self) -> None:
        if self._thread is None and self._sinks:
            self._thread = threading.Thread(
                target=self._run, name="features-gql-sinks", daemon=True
            )
            self._thread.start()

    def emit(self, event: OperationEvent) -> None:
        for name, sink in self._inline:
            try:
                sink(event)
            except Exception:
                self._failed(name)
        if self._thread is None or (self._gate is not None and not self._gate(event)):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.health.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event emitted so far reached its sinks (tests, shutdown)."""
        if self._thread is None:
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the thread; never waits much past ``timeout``.

        A sink that is stuck cannot hold up shutdown: the thread is a daemon, and what it
        has not delivered by then is counted as dropped.
        """
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            self.health.dropped += self._queue.qsize()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def _run(self) -> None:
        while True:
            # Take whatever has queued up since the last wake-up in one go: under load the
            # thread then wakes once per burst, not once per event, and competes less with
            # the request loop for the GIL.
            batch = [self._queue.get()]
            try:
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for item in batch:
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                assert isinstance(item, OperationEvent)
                for name, sink in self._sinks:
                    try:
                        sink(item)
                    except Exception:
                        self._failed(name)

    def _failed(self, name: str) -> None:
        count = self.health.failures.get(name, 0) + 1
        self.health.failures[name] = count
        if count == 1:
            log.exception(
                "operation sink %r failed; further failures are counted, not logged", name
            )
