"""The logging port: logger plugins receive every operation event and own log formatting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from features_gql.events import OperationEvent
from features_gql.registry import Registered, Registry

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")


@dataclass(frozen=True)
class LogSettings:
    format: LogFormat = "console"
    level: str = "INFO"


@runtime_checkable
class Logger(Protocol):
    """What a logger plugin's factory returns.

    A logger class may subclass ``Logger`` to inherit :meth:`accepts` (every event).
    """

    def accepts(self, event: OperationEvent) -> bool:
        """Whether the logger wants ``event``; events no logger wants are never queued.

        Called on the request path, so it must be trivial (a level check). This default,
        for loggers that subclass ``Logger``, wants every event.
        """
        return True

    def operation(self, event: OperationEvent) -> None:
        """Record one store operation. Called on the sink thread, never on a request."""

    def close(self) -> None:
        """Flush and release whatever the logger holds."""


LoggerFactory = Callable[[LogSettings], Logger]
#: A registered logger plugin.
LoggerPlugin = Registered[LoggerFactory]


class LoggerRegistry(Registry[LoggerFactory]):
    """Handed to ``features_gql_register_loggers``; validates what plugins add."""

    def __init__(self, provider: Callable[[], str] | None = None) -> None:
        super().__init__("logger", provider)
