"""The ``loguru`` logger: readable console lines by default, one JSON object per line with
``--log-format json``. It also takes over the standard ``logging`` records of
features-gql, aiohttp and the libraries, so everything leaves the process one way.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from features_gql import hookimpl
from features_gql.api import WRITES
from features_gql.events import OperationEvent
from features_gql.loggers import Logger, LoggerRegistry, LogSettings

if TYPE_CHECKING:
    from loguru import Record

_CONSOLE = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{name}</cyan> {message}{extra[_fields]}\n{exception}"
)
_OPERATION_FIELDS = (
    "store",
    "op",
    "resource",
    "feature",
    "items",
    "duration_ms",
    "outcome",
    "injected",
    "request_id",
    "error",
)


def _fields(record: Record) -> dict[str, Any]:
    return {k: v for k, v in record["extra"].items() if not k.startswith("_")}


def _console_format(record: Record) -> str:
    extra = _fields(record)
    record["extra"]["_fields"] = "".join(
        f" {key}={value}" for key, value in extra.items() if value is not None
    )
    return _CONSOLE


def _json_format(record: Record) -> str:
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
    }
    line.update({k: v for k, v in _fields(record).items() if v is not None})
    if record["exception"] is not None:
        exc_type = record["exception"].type
        line["exception"] = exc_type.__name__ if exc_type else None
    record["extra"]["_json"] = json.dumps(line, ensure_ascii=False, default=str)
    return "{extra[_json]}\n"


def _named(name: str) -> Callable[[Record], None]:
    """Report records under ``name`` (the stdlib logger name) rather than loguru's caller."""

    def patch(record: Record) -> None:
        record["name"] = name

    return patch


class _Intercept(logging.Handler):
    """Send standard-library log records through loguru (the loguru docs' recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        extra = getattr(record, "fields", None)
        bound = logger.bind(**extra) if isinstance(extra, dict) else logger
        bound.patch(_named(record.name)).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


class LoguruLogger:
    def __init__(self, settings: LogSettings) -> None:
        logger.remove()
        fmt = _json_format if settings.format == "json" else _console_format
        self._handler = logger.add(
            sys.stderr,
            level=settings.level.upper(),
            format=fmt,
            colorize=settings.format == "console" and sys.stderr.isatty(),
            backtrace=False,
            diagnose=False,
        )
        logging.basicConfig(handlers=[_Intercept()], level=logging.INFO, force=True)
        logging.getLogger("features_gql").setLevel(settings.level.upper())
        # aiohttp.access would duplicate the structured request line.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        threshold = logger.level(settings.level.upper()).no
        self._debug = threshold <= logger.level("DEBUG").no
        self._info = threshold <= logger.level("INFO").no
        self._warning = threshold <= logger.level("WARNING").no

    def _level(self, event: OperationEvent) -> tuple[str, bool]:
        # Writes are the audit trail: INFO. Reads are counted by the metrics and would
        # be a line per flag check: DEBUG. Failures of either: WARNING.
        if event.outcome != "ok":
            return "WARNING", self._warning
        if event.op in WRITES:
            return "INFO", self._info
        return "DEBUG", self._debug

    def accepts(self, event: OperationEvent) -> bool:
        """Successful writes log at INFO, successful reads at DEBUG, failures at WARNING."""
        # Asked once per store call on the request path: the rule of _level, without
        # building its tuple.
        if event.outcome != "ok":
            return self._warning
        return self._info if event.op in WRITES else self._debug

    def operation(self, event: OperationEvent) -> None:
        level, wanted = self._level(event)
        if not wanted:
            return  # filtered anyway: skip building a record nobody will see
        fields = {
            "store": event.store,
            "op": event.op,
            "resource": event.resource,
            "feature": event.feature,
            "items": event.items if event.items != 1 else None,
            "duration_ms": round(event.duration * 1000, 3),
            "outcome": event.outcome,
            "injected": True if event.injected else None,
            "request_id": event.request_id,
            "error": event.error,
        }
        bound = logger.bind(**{k: fields[k] for k in _OPERATION_FIELDS})
        bound.patch(_named("features_gql.store")).log(level, "store operation")

    def close(self) -> None:
        logger.complete()


def _factory(settings: LogSettings) -> Logger:
    return LoguruLogger(settings)


@hookimpl
def features_gql_register_loggers(registry: LoggerRegistry) -> None:
    registry.add(
        "loguru",
        _factory,
        description="Console lines or JSON (one object per line) on stderr, via loguru.",
    )
