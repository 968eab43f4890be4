"""The ``slow`` and ``failing`` loggers: sinks that misbehave on purpose.

    [logging]
    loggers = ["loguru", "slow", "failing"]

``slow`` takes :data:`SLOW_LOGGER_SECONDS` over every operation event, like a log
shipper behind a congested link; ``failing`` raises on every event. Neither may slow or
fail a request: the dispatcher calls sinks on its own thread, behind a bounded queue
(events beyond it are dropped and counted), and counts a sink's errors, logging only
the first. Use them to see that, and to watch ``features_gql_sink_failures`` and
``features_gql_sink_events_dropped`` move.
"""

from __future__ import annotations

import time

from features_gql import hookimpl
from features_gql.events import OperationEvent
from features_gql.loggers import Logger, LoggerRegistry, LogSettings

#: Seconds the ``slow`` logger spends on each event: about 20 events a second, far
#: below what the API answers.
SLOW_LOGGER_SECONDS = 0.05


class SlowLogger(Logger):
    """Sleeps on every event; counts the events it finished."""

    def __init__(self, seconds: float = SLOW_LOGGER_SECONDS) -> None:
        self.seconds = seconds
        self.handled = 0

    def operation(self, event: OperationEvent) -> None:
        time.sleep(self.seconds)
        self.handled += 1

    def close(self) -> None:
        pass


class FailingLogger(Logger):
    """Raises on every event; counts the events it refused."""

    def __init__(self) -> None:
        self.refused = 0

    def operation(self, event: OperationEvent) -> None:
        self.refused += 1
        raise RuntimeError(
            f"injected fault: the failing logger refused event {self.refused} "
            f"({event.op} on {event.store})"
        )

    def close(self) -> None:
        pass


def _slow(settings: LogSettings) -> Logger:
    return SlowLogger()


def _failing(settings: LogSettings) -> Logger:
    return FailingLogger()


@hookimpl
def features_gql_register_loggers(registry: LoggerRegistry) -> None:
    registry.add(
        "slow",
        _slow,
        description=f"Fault injection: spends {SLOW_LOGGER_SECONDS * 1000:g} ms on every event.",
    )
    registry.add(
        "failing", _failing, description="Fault injection: raises on every event it receives."
    )
