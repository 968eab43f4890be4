"""The logging port: logger plugins receive every operation event and own log formatting."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from features_gql.errors import ConfigError, PluginError
from features_gql.events import OperationEvent

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class LogSettings:
    format: LogFormat = "console"
    level: str = "INFO"


class Logger(Protocol):
    """What a logger plugin's factory returns.

    A logger may also define ``accepts(event) -> bool``: called on the request path (so it
    must be trivial, e.g. a level check), it lets the service skip handing over events the
    logger would drop anyway.
    """

    def operation(self, event: OperationEvent) -> None:
        """Record one store operation. Called on the sink thread, never on a request."""

    def close(self) -> None:
        """Flush and release whatever the logger holds."""


LoggerFactory = Callable[[LogSettings], Logger]


@dataclass(frozen=True)
class LoggerPlugin:
    name: str
    factory: LoggerFactory
    description: str
    provided_by: str


class LoggerRegistry:
    """Handed to ``features_gql_register_loggers``; validates what plugins add."""

    def __init__(self) -> None:
        self._loggers: dict[str, LoggerPlugin] = {}
        self.current_plugin = "?"

    def add(self, name: str, factory: LoggerFactory, *, description: str) -> None:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise PluginError(
                f"plugin {self.current_plugin!r} registered logger name {name!r}: names are "
                "1-32 characters of a-z, 0-9, '-' and '_', starting with a letter"
            )
        if not callable(factory):
            raise PluginError(f"logger {name!r} has a factory that is not callable")
        if name in self._loggers:
            raise PluginError(
                f"logger {name!r} is registered twice: by {self._loggers[name].provided_by!r} "
                f"and by {self.current_plugin!r}"
            )
        self._loggers[name] = LoggerPlugin(name, factory, description, self.current_plugin)

    def names(self) -> list[str]:
        return sorted(self._loggers)

    def all(self) -> list[LoggerPlugin]:
        return [self._loggers[name] for name in self.names()]

    def get(self, name: str) -> LoggerPlugin:
        try:
            return self._loggers[name]
        except KeyError:
            raise ConfigError(
                f"unknown logger plugin {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None
