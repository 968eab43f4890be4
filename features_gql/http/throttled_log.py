"""A log for events a client can repeat at will: the first line at once, then at most one
line per interval, with a count."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

#: Seconds between two lines about the same kind of event.
LOG_INTERVAL = 10.0
#: Kinds remembered before the quiet ones are forgotten: a kind may name a client, and
#: clients are as many as an attacker has addresses.
MAX_KINDS = 4096


class ThrottledLog:
    """Logs the first event of a kind at once, then at most one line per interval with
    the number of events since, so a flood of bad clients yields a handful of lines."""

    def __init__(
        self,
        logger: logging.Logger,
        loop: asyncio.AbstractEventLoop,
        interval: float = LOG_INTERVAL,
    ) -> None:
        self._logger = logger
        self._loop = loop
        self._interval = interval
        self._quiet_until: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._latest: dict[str, tuple[str, dict[str, Any]]] = {}
        self._flushes: dict[str, asyncio.TimerHandle] = {}
        self._levels: dict[str, int] = {}

    def event(
        self,
        kind: str,
        message: str,
        *,
        level: int = logging.WARNING,
        exc_info: BaseException | None = None,
        **fields: Any,
    ) -> None:
        """Log ``message`` now (with ``exc_info``, if given) or count it for the next line."""
        now = self._loop.time()
        if now >= self._quiet_until.get(kind, 0.0):
            if len(self._quiet_until) >= MAX_KINDS:
                self._forget_quiet(now)
            self._quiet_until[kind] = now + self._interval
            self._levels[kind] = level
            self._logger.log(
                level, message, exc_info=exc_info, extra={"fields": {**fields, "count": 1}}
            )
            return
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._latest[kind] = (message, fields)
        if kind not in self._flushes:
            self._flushes[kind] = self._loop.call_at(self._quiet_until[kind], self._flush, kind)

    def _forget_quiet(self, now: float) -> None:
        """Forget the kinds whose interval is over and that have nothing left to say;
        when every kind is still busy, the oldest half, counts and all."""
        quiet = [k for k, until in self._quiet_until.items() if until <= now]
        for kind in quiet:
            if kind not in self._flushes:
                del self._quiet_until[kind]
                self._levels.pop(kind, None)
        if len(self._quiet_until) >= MAX_KINDS:
            for kind in list(self._quiet_until)[: MAX_KINDS // 2]:
                del self._quiet_until[kind]
                self._levels.pop(kind, None)
                self._counts.pop(kind, None)
                self._latest.pop(kind, None)
                handle = self._flushes.pop(kind, None)
                if handle is not None:
                    handle.cancel()

    def _flush(self, kind: str) -> None:
        self._flushes.pop(kind, None)
        count = self._counts.pop(kind, 0)
        message, fields = self._latest.pop(kind, ("", {}))
        if count:
            # Keep quiet for another interval: a sustained flood yields one line each.
            self._quiet_until[kind] = self._loop.time() + self._interval
            self._logger.log(
                self._levels.get(kind, logging.WARNING),
                message,
                extra={"fields": {**fields, "count": count, "seconds": self._interval}},
            )

    def close(self) -> None:
        for kind, handle in list(self._flushes.items()):
            handle.cancel()
            self._flush(kind)
