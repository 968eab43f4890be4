"""Connection limits of the standalone service, so that slow clients cannot deny service.

aiohttp bounds the *size* of a request's headers but neither the *time* a client may take
to send them nor the number of open connections (its keep-alive timer only runs between
requests). A client that opens many connections and sends each request's headers one
line at a time ("slowloris") used to hold every file descriptor of the process: new
connections then failed in ``accept()``, and asyncio logged a traceback for every attempt.

The service therefore runs aiohttp's request handler through a small subclass that tells
a :class:`ConnectionGuard` which phase each connection is in:

* **arriving**: connected, or started a request, and its headers are not complete yet;
* **busy**: a request is being answered (its body read, the store called);
* **idle**: between requests on a keep-alive connection.

An arriving connection has ``header_timeout`` seconds, from the moment it connects or
sends the first byte of its next request, to complete the headers; a sweep closes the late
ones (with a JSON 408 if they had started a request). The body then has
:data:`BODY_TIMEOUTS` header timeouts to arrive: a late one fails the request's read, which
answers a JSON 408 and closes the connection. When ``max_connections`` are open, a
new connection first takes the place of the longest-idle keep-alive connection, then of
the connection that has been arriving the longest; only when every connection is busy is
it refused with a JSON 503. So a flood of slow clients holds only connections nobody else
needs, each for at most ``header_timeout``, and never the last file descriptors.

Misbehaving clients are logged as counts, once per :data:`LOG_INTERVAL`, never as one line
(or one traceback) per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy

from features_gql.http.app import METRICS_KEY, server_handler
from features_gql.http.responses import code_for, error_response, raw_error_response
from features_gql.http.throttled_log import ThrottledLog
from features_gql.metrics import Metrics

if TYPE_CHECKING:
    from features_gql.config import Settings

log = logging.getLogger("features_gql.connections")

#: Connections per process when none is configured (each costs a file descriptor and a
#: few kilobytes; the event loop handles thousands of idle ones easily).
DEFAULT_MAX_CONNECTIONS = 4096
#: Keep-alive connections idle longer than this are closed (aiohttp's run_app default).
KEEPALIVE_TIMEOUT = 75.0
#: Seconds given to requests in flight when the service stops.
SHUTDOWN_TIMEOUT = 60.0
#: A request's body must arrive within this many header timeouts of its headers (30 s by
#: default: a 4 MiB body at 140 kB/s).
BODY_TIMEOUTS = 3
#: How asyncio's event loop names a failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM).
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"

_ARRIVING, _BUSY, _IDLE, _CLOSED = range(4)
_NAMES = {_ARRIVING: "arriving", _BUSY: "busy", _IDLE: "idle", _CLOSED: "closed"}


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit, where allowed.

    Returns the (soft, hard) limits in force afterwards. Connections, the store's files and
    its connections all count against the soft limit, which is often 1024 while the hard
    limit allows far more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) still has a ceiling the kernel enforces: try a few.
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 1 << 16, 10240]
    if soft != resource.RLIM_INFINITY and any(target > soft for target in targets):
        for target in targets:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                break
            except (ValueError, OSError):
                continue
        else:
            log.warning(
                "could not raise the open-file limit",
                extra={"fields": {"soft": soft, "hard": hard}},
            )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def connection_budget(configured: int | None, soft_limit: int) -> int:
    """How many client connections fit under the open-file limit.

    A quarter of the descriptors (at most 512) is kept for everything else: asyncio
    accepts up to a backlog (128) of connections before the guard sees them, connections
    closed to make room release theirs a moment later, and the store's files and
    connections (a MongoDB pool holds up to 100) and the logs need theirs.
    """
    wanted = DEFAULT_MAX_CONNECTIONS if configured is None else configured
    if soft_limit == resource.RLIM_INFINITY:
        return wanted
    reserve = min(512, max(16, soft_limit // 4))
    return max(1, min(wanted, soft_limit - reserve))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int | None = None
    header_timeout: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        """The limits ``settings`` configure."""
        return cls(settings.max_connections, settings.header_timeout)


class AcceptErrorHandler:
    """The event loop's exception handler: failed ``accept()`` calls (out of file
    descriptors) become one counted line per interval; anything else goes to the handler
    that was there before.

    asyncio reports each failed ``accept()`` with a traceback and retries every second;
    in Python 3.11 one readiness event can fail up to a backlog's worth of times, and
    every failure schedules another retry, so the log grew by thousands of tracebacks a
    second while the descriptors lasted out.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics | None,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    ) -> None:
        self._log = ThrottledLog(log, loop)
        self._metrics = metrics
        self._previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES:
            exc = context.get("exception")
            reason = errno.errorcode.get(getattr(exc, "errno", None) or 0, "unknown")
            if self._metrics is not None:
                self._metrics.connections_dropped.labels("accept_failed").inc()
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            self._log.event(
                "accept",
                "cannot accept connections: out of file descriptors; new clients wait in "
                "the listen backlog (raise the open-file limit or lower max_connections)",
                error=reason,
                open_file_limit=soft,
                hard_limit=hard,
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def close(self) -> None:
        self._log.close()


#: The guard's clock: asyncio's own (``loop.time()`` is ``time.monotonic()``), read in C
#: rather than through a method, twice per request.
_now = time.monotonic


class ConnectionGuard:
    """Knows every connection's phase; times out slow headers; keeps the count bounded."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._loop = loop
        self._metrics = metrics
        self._log = ThrottledLog(log, loop)
        # Insertion order is the order of arrival (or of going idle): the oldest first.
        self._arriving: dict[GuardedRequestHandler, float] = {}
        self._idle: dict[GuardedRequestHandler, None] = {}
        #: Since when, and the body being received.
        self._busy: dict[GuardedRequestHandler, tuple[float, StreamReader]] = {}
        self.body_timeout = header_timeout * BODY_TIMEOUTS
        self._tick = min(1.0, header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = loop.call_later(self._tick, self._sweep)
        if metrics is not None:
            metrics.connections_open.set_function(lambda: self.open)

    @property
    def open(self) -> int:
        return len(self._arriving) + len(self._idle) + len(self._busy)

    # -- transitions, called by GuardedRequestHandler and GuardedServer (which also keep the
    # books of the two that happen on every request, idle to arriving and busy to idle) ----

    def opened(self, conn: GuardedRequestHandler) -> bool:
        """A new connection: admit it (making room if needed) or refuse it."""
        if self.open >= self.max_connections and not self._make_room():
            self._dropped("refused", "every connection is busy")
            return False
        conn.phase = _ARRIVING
        conn.started = False
        self._arriving[conn] = _now()
        return True

    def busy(self, conn: GuardedRequestHandler, body: StreamReader) -> None:
        """The headers of a request are complete: it goes to the application."""
        if conn.phase == _ARRIVING:
            del self._arriving[conn]
        elif conn.phase == _IDLE:  # a pipelined request, received while the last was answered
            del self._idle[conn]
        else:
            return
        conn.phase = _BUSY
        self._busy[conn] = (_now(), body)

    def closed(self, conn: GuardedRequestHandler) -> None:
        phase, conn.phase = conn.phase, _CLOSED
        if phase == _ARRIVING:
            self._arriving.pop(conn, None)
        elif phase == _IDLE:
            self._idle.pop(conn, None)
        elif phase == _BUSY:
            self._busy.pop(conn, None)

    # -- enforcement -----------------------------------------------------------------------

    def _make_room(self) -> bool:
        if self._idle:
            victim = next(iter(self._idle))
            reason = "idle keep-alive connection closed to make room"
        elif self._arriving:
            victim = next(iter(self._arriving))
            reason = "connection still sending its request closed to make room"
        else:
            return False
        self.closed(victim)
        victim.force_close()
        self._dropped("evicted", reason)
        return True

    def _sweep(self) -> None:
        self._sweeper = self._loop.call_later(self._tick, self._sweep)
        late = _now() - self.header_timeout
        expired = []
        for conn, since in self._arriving.items():
            if since > late:
                break
            expired.append(conn)
        for conn in expired:
            self.closed(conn)
            conn.time_out()
            self._dropped("header_timeout", "request headers not received in time")
        late = _now() - self.body_timeout
        slow_bodies = []
        for conn, (since, body) in self._busy.items():
            if since > late:
                break
            if not body.is_eof():
                slow_bodies.append((conn, body))
        for conn, body in slow_bodies:
            if conn.body_timed_out:
                # The application has not read the body since: nothing left but to close.
                self.closed(conn)
                conn.force_close()
                continue
            # The application's read fails with a 408 that it answers like any HTTP error,
            # and the connection closes once that answer is written.
            conn.body_timed_out = True
            del self._busy[conn]  # to the end: the dict stays in the order of `since`
            self._busy[conn] = (_now(), body)
            body.set_exception(
                web.HTTPRequestTimeout(
                    text=f"The request body did not arrive within {self.body_timeout:g} s."
                )
            )
            self._dropped("body_timeout", "request body not received in time")

    def _dropped(self, reason: str, message: str) -> None:
        if self._metrics is not None:
            self._metrics.connections_dropped.labels(reason).inc()
        self._log.event(
            reason,
            f"connections closed: {message}",
            reason=reason,
            max_connections=self.max_connections,
            header_timeout_s=self.header_timeout,
            arriving=len(self._arriving),
            idle=len(self._idle),
            busy=len(self._busy),
        )

    def malformed(self, status: int, exc: BaseException | None) -> None:
        detail = str(getattr(exc, "message", "") or exc or "").split("\n", 1)[0]
        self._log.event(
            "malformed",
            "malformed requests rejected",
            status=status,
            error=detail[:200] or None,
        )

    def failed(self, status: int, exc: BaseException | None) -> None:
        self._log.event(
            "failed",
            "error answering a request outside the application",
            level=logging.ERROR,
            exc_info=exc,
            status=status,
            error=repr(exc)[:200] if exc is not None else None,
        )

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._log.close()


_REQUEST_TIMEOUT = raw_error_response(
    408, "The request headers did not arrive in time; the connection is closed."
)
_REFUSED = raw_error_response(
    503,
    "Too many connections are busy; retry in a moment.",
    "Retry-After: 1",
)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler, reporting its phases to a :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "body_timed_out", "phase", "started")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self.phase = _CLOSED
        self.started = False
        self.body_timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.opened(self):
            if self.transport is not None:
                self.transport.write(_REFUSED)
            self.force_close()

    # Both run for every request: the base class is called directly (no super() object),
    # and the Server header is left to whoever makes each answer (the middleware, the
    # error answers, handle_error below).
    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _IDLE:
            # The first bytes of another request on an idle connection. The guard's books
            # are kept here, not by a method of the guard: this runs for every request.
            guard = self._guard
            guard._idle.pop(self, None)
            self.phase = _ARRIVING
            self.started = True
            guard._arriving[self] = _now()
        elif phase == _ARRIVING:
            self.started = True
        RequestHandler.data_received(self, data)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered, reset = await RequestHandler.finish_response(self, request, resp, start_time)
        if self.body_timed_out:
            self.force_close()  # once the 408 is written; the rest of the body is not awaited
        elif self.phase == _BUSY and answered.keep_alive and not reset:
            # Idle until its next request; a connection about to close stays busy until then.
            # The guard's books are kept here, as in data_received.
            guard = self._guard
            del guard._busy[self]
            self.phase = _IDLE
            guard._idle[self] = None
        return answered, reset

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.closed(self)
        super().connection_lost(exc)

    def time_out(self) -> None:
        if self.started and self.transport is not None:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the application never saw: malformed (400, counted, no traceback),
        or an error inside aiohttp itself (500, logged with its traceback)."""
        if status >= 500:
            # A bug in aiohttp or in this module; clients may be able to repeat it at will,
            # so only the first of each interval carries its traceback.
            self._guard.failed(status, exc)
            text = "Internal error."
        else:
            self._guard.malformed(status, exc)
            detail = str(getattr(exc, "message", "") or message or "").split("\n", 1)[0]
            text = f"Malformed request: {detail.rstrip(':')}." if detail else "Malformed request."
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started: no error response can follow")
        response = error_response(status, text, code_for(status))
        response.force_close()
        return response


RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    BaseRequest,
]


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    def __init__(
        self,
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
        *,
        guard: ConnectionGuard,
        request_factory: RequestFactory,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, request_factory=self._guarded(request_factory), **kwargs)
        self.guard = guard

    def _guarded(self, make_request: RequestFactory) -> RequestFactory:
        def request_factory(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> BaseRequest:
            if isinstance(protocol, GuardedRequestHandler):
                self.guard.busy(protocol, payload)
            expect = message.headers.get("Expect")
            if expect is not None and expect.lower() != "100-continue":
                # aiohttp answers an unknown expectation with a 417 whose text quotes the
                # header, and crashes into a 500 when that is not UTF-8. HTTP lets a server
                # ignore expectations it does not know, which is what this does.
                headers = CIMultiDict(message.headers)
                del headers["Expect"]
                message = message._replace(headers=CIMultiDictProxy(headers))
            return make_request(message, payload, protocol, writer, task)

        return request_factory

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits
        self.guard: ConnectionGuard | None = None

    async def _make_server(self) -> web.Server:
        wrap = server_handler(self.app)  # before the application is frozen
        plain = await super()._make_server()
        handler = wrap(plain.request_handler)
        metrics = self.app.get(METRICS_KEY)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = connection_budget(self._limits.max_connections, soft)
        log.info(
            "connection limits",
            extra={
                "fields": {
                    "max_connections": budget,
                    "header_timeout_s": self._limits.header_timeout,
                    "body_timeout_s": self._limits.header_timeout * BODY_TIMEOUTS,
                    "open_file_limit": soft,
                }
            },
        )
        if self._limits.max_connections is not None and budget < self._limits.max_connections:
            log.warning(
                "max_connections lowered to fit the open-file limit",
                extra={
                    "fields": {
                        "max_connections": budget,
                        "configured": self._limits.max_connections,
                        "open_file_limit": soft,
                    }
                },
            )
        self.guard = ConnectionGuard(
            max_connections=budget,
            header_timeout=self._limits.header_timeout,
            loop=asyncio.get_running_loop(),
            metrics=metrics,
        )
        return GuardedServer(
            handler,
            guard=self.guard,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )

    async def _cleanup_server(self) -> None:
        if self.guard is not None:
            self.guard.close()
        await super()._cleanup_server()


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, as ``aiohttp.web.run_app`` does, with the
    connection limits, the open-file limit raised, and out-of-descriptor errors counted."""
    raise_open_file_limit()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        accept_errors = AcceptErrorHandler(loop, app.get(METRICS_KEY), loop.get_exception_handler())
        loop.set_exception_handler(accept_errors)
        runner = GuardedAppRunner(
            app,
            limits,
            handle_signals=True,
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            site: web.BaseSite
            if sock is not None:
                site = web.SockSite(runner, sock)
            else:
                site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
            await site.start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()
            accept_errors.close()

    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve())
