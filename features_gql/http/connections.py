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
* **idle**: between requests on a keep-alive connection;
* **awaiting**: a WebSocket upgraded without a token, whose ``connection_init`` has not
  been accepted yet.

An arriving connection has ``header_timeout`` seconds, from the moment it connects or
sends the first byte of its next request, to complete the headers; a sweep closes the late
ones (with a JSON 408 if they had started a request). The body then has
:data:`BODY_TIMEOUTS` header timeouts to arrive: a late one fails the request's read, which
answers a JSON 408 and closes the connection. An awaiting WebSocket has
:data:`INIT_TIMEOUTS` header timeouts (3 s by default) to send ``connection_init``, or
it is closed with 4408.

**Budgets.** Arriving and awaiting connections are *unproven*: nothing says yet that a
client is behind them rather than an open socket held for its own sake. They count
against a budget per address (``max_unproven_per_address``; IPv6 addresses by /64, the
least a host is given) and a global one (``max_unproven_connections``, half of
``max_connections`` by default). Over either, the oldest unproven connection of that
address (or of all) is closed: a JSON 429 (the address's) or 503 (the global one) with
``Retry-After`` if it had started a request, a 4408 close with a reason if it is a
WebSocket. Connections unproven for less than :data:`GRACE` header timeouts are spared:
a client's pool opening a hundred connections at once sends a hundred requests a moment
later. A body still arriving counts against its sender, its address until :func:`claim`
names the principal that authenticated it: past ``max_bodies_per_principal``, the
oldest one's read fails with a JSON 429 and its connection closes.

When ``max_connections`` are open, a new connection takes the place of, in this order:
the oldest unproven connection past its grace, the longest-idle keep-alive connection,
then the oldest unproven connection. Unproven first: such a connection has shown
nothing and may be a slow client, while closing an idle keep-alive connection costs a
client that has been answered a reconnect. The grace keeps a burst of new connections,
most of them about to send their requests, from being closed for an idle one. Only when
every connection is busy is a new one refused with a JSON 503. So a flood of slow
clients holds only connections nobody else needs, each for at most ``header_timeout``,
and never the last file descriptors.

Misbehaving clients are logged as counts, once per :data:`LOG_INTERVAL`, never as one line
(or one traceback) per connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import heapq
import ipaddress
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy

from features_gql.auth import ANONYMOUS
from features_gql.http.responses import code_for, error_response, raw_error_response
from features_gql.http.throttled_log import ThrottledLog
from features_gql.metrics import Metrics

if TYPE_CHECKING:
    from features_gql.config import Settings

log = logging.getLogger("features_gql.connections")

#: Connections per process when none is configured (each costs a file descriptor and a
#: few kilobytes; the event loop handles thousands of idle ones easily).
DEFAULT_MAX_CONNECTIONS = 4096
#: Unproven connections (see above) one address may hold when none is configured: more
#: than a browser or a client's pool opens at once, far fewer than a flood.
DEFAULT_MAX_UNPROVEN_PER_ADDRESS = 64
#: Request bodies still arriving per principal when none is configured (the anonymous
#: principal's are counted per address).
DEFAULT_MAX_BODIES_PER_PRINCIPAL = 32
#: Keep-alive connections idle longer than this are closed (aiohttp's run_app default).
KEEPALIVE_TIMEOUT = 75.0
#: Seconds given to requests in flight when the service stops.
SHUTDOWN_TIMEOUT = 60.0
#: A request's body must arrive within this many header timeouts of its headers (30 s by
#: default: a 4 MiB body at 140 kB/s).
BODY_TIMEOUTS = 3
#: A WebSocket upgraded without a token must send ``connection_init`` within this many
#: header timeouts (3 s by default): it is a frame of a few bytes, sent at once by every
#: client, and the connection holds its slot meanwhile.
INIT_TIMEOUTS = 0.3
#: Unproven connections younger than this many header timeouts (1 s by default) do not
#: count as over a budget yet.
GRACE = 0.1
#: How asyncio's event loop names a failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM).
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
#: The close code of graphql-transport-ws for a connection_init that did not come in time.
#: It closes every unproven WebSocket: graphql-ws clients retry after it (not after 4429).
INIT_TIMEOUT_CLOSE_CODE = 4408

_ARRIVING, _BUSY, _IDLE, _CLOSED, _AWAITING = range(5)
_NAMES = {
    _ARRIVING: "arriving",
    _BUSY: "busy",
    _IDLE: "idle",
    _CLOSED: "closed",
    _AWAITING: "awaiting",
}


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


def peer_address(peername: object) -> str:
    """The address whose budget a connection from ``peername`` (a transport's) counts
    against (:func:`client_key`). A Unix socket's peers share ``""``."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return ""
    return client_key(peername[0])


@functools.lru_cache(maxsize=4096)
def client_key(host: str) -> str:
    """The client an address belongs to, for every per-client budget and limit: an IPv4
    address (one mapped into IPv6 included: a dual-stack socket reports IPv4 clients so),
    or an IPv6 address's /64 network, since one host is commonly given a whole /64 and
    picks addresses in it at will."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int | None = None
    header_timeout: float = 10.0
    #: None: half of ``max_connections`` (as lowered to fit the open-file limit).
    max_unproven_connections: int | None = None
    max_unproven_per_address: int = DEFAULT_MAX_UNPROVEN_PER_ADDRESS
    max_bodies_per_principal: int = DEFAULT_MAX_BODIES_PER_PRINCIPAL

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        """The limits ``settings`` configure."""
        return cls(
            settings.max_connections,
            settings.header_timeout,
            settings.max_unproven_connections,
            settings.max_unproven_per_address,
            settings.max_bodies_per_principal,
        )


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


class Peer:
    """One address's connections: how many are open, and how many of them unproven."""

    __slots__ = ("address", "connections", "unproven")

    def __init__(self, address: str) -> None:
        self.address = address
        self.connections = 0
        self.unproven = 0


#: The peer of a connection the guard has not admitted.
_NOBODY = Peer("")

#: Whom a body still arriving is counted against: a principal's name, or the address of
#: a request nobody has authenticated yet (or that the anonymous principal sent).
_Sender = str | Peer


def _ws_close(reason: str) -> bytes:
    """A WebSocket close frame with :data:`INIT_TIMEOUT_CLOSE_CODE` and ``reason``, as a
    server sends it (unmasked); the reason fits the 123 bytes a close frame allows."""
    payload = INIT_TIMEOUT_CLOSE_CODE.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload


class ConnectionGuard:
    """Knows every connection's phase and address; times out slow headers, bodies and
    WebSocket initialisations; keeps the count, and the unproven ones, within budgets."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics | None = None,
        max_unproven_connections: int | None = None,
        max_unproven_per_address: int = DEFAULT_MAX_UNPROVEN_PER_ADDRESS,
        max_bodies_per_principal: int = DEFAULT_MAX_BODIES_PER_PRINCIPAL,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.max_unproven_connections = (
            max(1, max_connections // 2)
            if max_unproven_connections is None
            else max_unproven_connections
        )
        self.max_unproven_per_address = max_unproven_per_address
        self.max_bodies_per_principal = max_bodies_per_principal
        self._loop = loop
        self._metrics = metrics
        self._log = ThrottledLog(log, loop)
        # Insertion order is the order of arrival (or of going idle): the oldest first.
        self._arriving: dict[GuardedRequestHandler, float] = {}
        self._idle: dict[GuardedRequestHandler, None] = {}
        #: Since when, and the body being received.
        self._busy: dict[GuardedRequestHandler, tuple[float, StreamReader]] = {}
        #: WebSockets awaiting connection_init, since when.
        self._awaiting: dict[GuardedRequestHandler, float] = {}
        #: Every address with a connection open.
        self._peers: dict[str, Peer] = {}
        #: Addresses that went over their budget with connections too young to close:
        #: the sweep looks at them again.
        self._over: dict[Peer, None] = {}
        #: Bodies still arriving, by sender, the oldest first.
        self._bodies: dict[_Sender, dict[GuardedRequestHandler, StreamReader]] = {}
        self.body_timeout = header_timeout * BODY_TIMEOUTS
        # Rounded: 10 s x 0.3 is 3.0000000000000004 s in floating point.
        self.init_timeout = round(header_timeout * INIT_TIMEOUTS, 6)
        self.grace = round(header_timeout * GRACE, 6)
        self._tick = min(1.0, header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = loop.call_later(self._tick, self._sweep)
        if metrics is not None:
            metrics.connections_open.set_function(lambda: self.open)
            metrics.connections_unproven.set_function(lambda: self.unproven)

    @property
    def open(self) -> int:
        return len(self._arriving) + len(self._idle) + len(self._busy) + len(self._awaiting)

    @property
    def unproven(self) -> int:
        return len(self._arriving) + len(self._awaiting)

    # -- transitions, called by GuardedRequestHandler and GuardedServer (which also keep the
    # books of the two that happen on every request, idle to arriving and busy to idle) ----

    def opened(self, conn: GuardedRequestHandler, address: str) -> bool:
        """A new connection from ``address``: admit it (making room if needed) or refuse it."""
        if self.open >= self.max_connections and not self._make_room():
            self._dropped("refused", "every connection is busy")
            return False
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = Peer(address)
        peer.connections += 1
        peer.unproven += 1
        conn.peer = peer
        conn.phase = _ARRIVING
        conn.started = False
        now = _now()
        self._arriving[conn] = now
        self._check_budgets(peer, now)
        return True

    def busy(self, conn: GuardedRequestHandler, body: StreamReader) -> None:
        """The headers of a request are complete: it goes to the application."""
        phase = conn.phase
        if phase == _ARRIVING:
            del self._arriving[conn]
            conn.peer.unproven -= 1
        elif phase == _IDLE:  # a pipelined request, received while the last was answered
            del self._idle[conn]
        else:
            return
        conn.phase = _BUSY
        conn.answering = False
        if conn.sender is not None:
            self._forget_body(conn)
        self._busy[conn] = (_now(), body)
        if not body.is_eof():
            # Counted against its address until the request is authenticated (claim()).
            self._arriving_body(conn, conn.peer, body)

    def claimed(self, conn: GuardedRequestHandler, principal: str) -> None:
        """``principal`` authenticated the request ``conn`` is busy with, or the
        connection_init of its WebSocket: an awaiting WebSocket is proven, and a body
        still arriving counts against the principal from now on."""
        if conn.phase == _AWAITING:
            del self._awaiting[conn]
            conn.peer.unproven -= 1
            conn.phase = _BUSY
            self._busy[conn] = (_now(), EMPTY_PAYLOAD)
        elif conn.sender is not None and conn.phase == _BUSY:
            body = self._forget_body(conn)
            if body is not None and not body.is_eof():
                self._arriving_body(conn, conn.peer if principal == ANONYMOUS else principal, body)

    def awaiting(self, conn: GuardedRequestHandler) -> None:
        """``conn`` was upgraded to a WebSocket without a token: unproven until claimed."""
        if conn.phase != _BUSY:
            return
        del self._busy[conn]
        conn.phase = _AWAITING
        conn.peer.unproven += 1
        now = _now()
        self._awaiting[conn] = now
        self._check_budgets(conn.peer, now)

    def closed(self, conn: GuardedRequestHandler) -> None:
        phase, conn.phase = conn.phase, _CLOSED
        if phase == _CLOSED:
            return
        peer = conn.peer
        if phase == _ARRIVING:
            self._arriving.pop(conn, None)
            peer.unproven -= 1
        elif phase == _IDLE:
            self._idle.pop(conn, None)
        elif phase == _BUSY:
            self._busy.pop(conn, None)
        elif phase == _AWAITING:
            self._awaiting.pop(conn, None)
            peer.unproven -= 1
        if conn.sender is not None:
            self._forget_body(conn)
        peer.connections -= 1
        if peer.connections == 0:
            self._peers.pop(peer.address, None)
            self._over.pop(peer, None)

    def init_timed_out(self) -> None:
        """A WebSocket was closed for not sending connection_init in time (4408)."""
        self._dropped("init_timeout", "WebSocket connection_init not received in time")

    # -- budgets ---------------------------------------------------------------------------

    def _check_budgets(self, peer: Peer, now: float) -> None:
        if peer.unproven > self.max_unproven_per_address:
            self._enforce_addresses((peer,), now)
        if len(self._arriving) + len(self._awaiting) > self.max_unproven_connections:
            self._enforce_global(now)

    def _unproven(self) -> Iterator[tuple[float, GuardedRequestHandler]]:
        """Every unproven connection, the oldest first."""
        return heapq.merge(
            ((since, conn) for conn, since in self._arriving.items()),
            ((since, conn) for conn, since in self._awaiting.items()),
            key=itemgetter(0),
        )

    def _enforce_addresses(self, peers: Iterable[Peer], now: float) -> None:
        """Close the oldest unproven connections of ``peers`` past their grace, down to
        each one's budget. One walk through the unproven connections past their grace,
        whatever the number of addresses: done only for addresses over their budget,
        never per request. An address that younger connections keep over its budget is
        looked at again by the sweep."""
        budget = self.max_unproven_per_address
        excess = {peer: peer.unproven - budget for peer in peers}
        aged = now - self.grace
        victims: list[GuardedRequestHandler] = []
        wanted = sum(count for count in excess.values() if count > 0)
        for since, conn in self._unproven():
            if len(victims) >= wanted or since > aged:
                break
            left = excess.get(conn.peer, 0)
            if left > 0:
                excess[conn.peer] = left - 1
                victims.append(conn)
        for conn in victims:
            self._evict_unproven(
                conn, _TOO_MANY_FROM_ADDRESS, _WS_TOO_MANY_FROM_ADDRESS,
                "unproven_address", "too many unproven connections from one address",
                address=conn.peer.address,
            )  # fmt: skip
        for peer in excess:
            if peer.unproven > budget and peer.connections > 0:
                self._over[peer] = None
            else:
                self._over.pop(peer, None)

    def _oldest_unproven(self) -> tuple[float, GuardedRequestHandler] | None:
        arriving = next(iter(self._arriving.items()), None)
        awaiting = next(iter(self._awaiting.items()), None)
        if arriving is None:
            return None if awaiting is None else (awaiting[1], awaiting[0])
        if awaiting is None or arriving[1] <= awaiting[1]:
            return arriving[1], arriving[0]
        return awaiting[1], awaiting[0]

    def _enforce_global(self, now: float) -> None:
        aged = now - self.grace
        while len(self._arriving) + len(self._awaiting) > self.max_unproven_connections:
            oldest = self._oldest_unproven()
            if oldest is None or oldest[0] > aged:
                return
            self._evict_unproven(
                oldest[1], _TOO_MANY_UNPROVEN, _WS_TOO_MANY_UNPROVEN,
                "unproven_global", "too many unproven connections",
            )  # fmt: skip

    def _evict_unproven(
        self,
        conn: GuardedRequestHandler,
        answer: bytes,
        close_frame: bytes,
        reason: str,
        message: str,
        **fields: Any,
    ) -> None:
        """Close an unproven connection, telling one that started a request ``answer``
        and a WebSocket ``close_frame`` (nothing else has been written to it yet)."""
        phase = conn.phase
        self.closed(conn)
        transport = conn.transport
        if transport is not None:
            if phase == _AWAITING:
                transport.write(close_frame)
            elif conn.started:
                transport.write(answer)
        conn.force_close()
        self._dropped(reason, message, **fields)

    def _arriving_body(
        self, conn: GuardedRequestHandler, sender: _Sender, body: StreamReader
    ) -> None:
        conn.sender = sender
        bodies = self._bodies.get(sender)
        if bodies is None:
            bodies = self._bodies[sender] = {}
        bodies[conn] = body
        if len(bodies) > self.max_bodies_per_principal:
            # Those that have arrived since are no longer counted.
            for done in [other for other, read in bodies.items() if read.is_eof()]:
                del bodies[done]
                done.sender = None
            while len(bodies) > self.max_bodies_per_principal:
                oldest, body = next(iter(bodies.items()))
                del bodies[oldest]
                oldest.sender = None
                self._fail_body(
                    oldest,
                    body,
                    web.HTTPTooManyRequests(
                        text="Too many request bodies of this client are still arriving; "
                        "this one was the oldest.",
                        headers={"Retry-After": "1"},
                    ),
                )
                self._dropped(
                    "body_budget",
                    "request body closed: too many of one principal's still arriving",
                    principal=sender if isinstance(sender, str) else ANONYMOUS,
                    address=oldest.peer.address,
                )

    def _forget_body(self, conn: GuardedRequestHandler) -> StreamReader | None:
        sender, conn.sender = conn.sender, None
        if sender is None:
            return None
        bodies = self._bodies.get(sender)
        if bodies is None:
            return None
        body = bodies.pop(conn, None)
        if not bodies:
            del self._bodies[sender]
        return body

    def _fail_body(
        self, conn: GuardedRequestHandler, body: StreamReader, error: web.HTTPException
    ) -> None:
        """End a body that is still arriving. The application's read of it fails with
        ``error``, which it answers like any HTTP error before the connection closes; if
        the request has been answered already, the connection just closes: aiohttp reads
        the rest of such a body itself (to linger before closing), and an error raised
        into that read is logged as an "Unhandled exception" with its traceback."""
        if conn.answering:
            self.closed(conn)
            conn.force_close()
            return
        conn.body_timed_out = True
        if conn.phase == _BUSY:
            # To the end, since now: closed by the sweep if the application never reads
            # it again, and the dict stays in the order of `since`.
            del self._busy[conn]
            self._busy[conn] = (_now(), body)
        body.set_exception(error)

    # -- enforcement -----------------------------------------------------------------------

    def _make_room(self) -> bool:
        oldest = self._oldest_unproven()
        if oldest is not None and (oldest[0] <= _now() - self.grace or not self._idle):
            self._evict_unproven(
                oldest[1], _TOO_MANY_UNPROVEN, _WS_TOO_MANY_UNPROVEN,
                "evicted", "unproven connection closed to make room",
            )  # fmt: skip
            return True
        if self._idle:
            victim = next(iter(self._idle))
            self.closed(victim)
            victim.force_close()
            self._dropped("evicted", "idle keep-alive connection closed to make room")
            return True
        return False

    def _sweep(self) -> None:
        self._sweeper = self._loop.call_later(self._tick, self._sweep)
        now = _now()
        late = now - self.header_timeout
        expired = []
        for conn, since in self._arriving.items():
            if since > late:
                break
            expired.append(conn)
        for conn in expired:
            self.closed(conn)
            conn.time_out()
            self._dropped("header_timeout", "request headers not received in time")
        late = now - self.body_timeout
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
            self._fail_body(
                conn,
                body,
                web.HTTPRequestTimeout(
                    text=f"The request body did not arrive within {self.body_timeout:g} s."
                ),
            )
            self._dropped("body_timeout", "request body not received in time")
        if self._over:
            self._enforce_addresses(list(self._over), now)
        if len(self._arriving) + len(self._awaiting) > self.max_unproven_connections:
            self._enforce_global(now)

    def _dropped(self, reason: str, message: str, **fields: Any) -> None:
        if self._metrics is not None:
            self._metrics.connections_dropped.labels(reason).inc()
        self._log.event(
            reason,
            f"connections closed: {message}",
            reason=reason,
            max_connections=self.max_connections,
            header_timeout_s=self.header_timeout,
            arriving=len(self._arriving),
            awaiting=len(self._awaiting),
            idle=len(self._idle),
            busy=len(self._busy),
            **fields,
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
_TOO_MANY_FROM_ADDRESS = raw_error_response(
    429,
    "Too many connections from this address are still sending requests; retry in a moment.",
    "Retry-After: 1",
)
_TOO_MANY_UNPROVEN = raw_error_response(
    503,
    "Too many connections are still sending their request; retry in a moment.",
    "Retry-After: 1",
)
_WS_TOO_MANY_FROM_ADDRESS = _ws_close(
    "Connection initialisation timeout: too many connections from this address await it"
)
_WS_TOO_MANY_UNPROVEN = _ws_close(
    "Connection initialisation timeout: too many connections await it"
)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler, reporting its phases to a :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "answering", "body_timed_out", "peer", "phase", "sender", "started")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self.phase = _CLOSED
        self.started = False
        self.body_timed_out = False
        self.peer = _NOBODY
        #: Whom the body still arriving is counted against (None: no such body).
        self.sender: _Sender | None = None
        #: The request has been answered (or is being): the rest of its body is aiohttp's.
        self.answering = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.opened(self, peer_address(transport.get_extra_info("peername"))):
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
            now = _now()
            guard._arriving[self] = now
            peer = self.peer
            peer.unproven += 1
            if peer.unproven > guard.max_unproven_per_address:
                guard._check_budgets(peer, now)
        elif phase == _ARRIVING:
            self.started = True
        RequestHandler.data_received(self, data)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        self.answering = True
        if not request.content.is_eof() and not resp.prepared:
            # Answered before its body was all in: the connection closes after it (below),
            # and the answer says so, or the client would send its next request on it.
            resp.force_close()
        answered, reset = await RequestHandler.finish_response(self, request, resp, start_time)
        if self.body_timed_out:
            self.force_close()  # once the 408 is written; the rest of the body is not awaited
        elif self.phase == _BUSY and answered.keep_alive and not reset:
            if request.content.is_eof():
                # Idle until its next request; a connection about to close stays busy
                # until then. The guard's books are kept here, as in data_received.
                guard = self._guard
                del guard._busy[self]
                self.phase = _IDLE
                guard._idle[self] = None
            else:
                # Answered before its body was all in: aiohttp takes in the rest (so that
                # the client reads the answer before the close), then closes, as for an
                # answer that said so. Kept alive, the body's next bytes would pass for a
                # request arriving, and a request arriving after them for the body.
                answered.force_close()
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


def claim(request: web.BaseRequest, principal: str) -> None:
    """``principal`` (a token's name, or ``anonymous``) has just authenticated
    ``request``, or the ``connection_init`` of the WebSocket it upgraded to. The
    connection is proven, and what remains of its body counts against ``principal``'s
    budget (the anonymous principal's is its address's). Nothing when the connection is
    not guarded (an application embedding the service)."""
    conn = request.protocol
    # Runs for every request: two attribute reads when there is nothing to do.
    if isinstance(conn, GuardedRequestHandler) and (
        conn.sender is not None or conn.phase == _AWAITING
    ):
        conn._guard.claimed(conn, principal)


def unproven(request: web.BaseRequest) -> float | None:
    """``request`` was upgraded to a WebSocket without a token: the connection is
    unproven until :func:`claim` (an accepted ``connection_init``). Returns the seconds
    it has to send ``connection_init``, or None when the connection is not guarded."""
    conn = request.protocol
    if not isinstance(conn, GuardedRequestHandler):
        return None
    conn._guard.awaiting(conn)
    return conn._guard.init_timeout


def init_timed_out(request: web.BaseRequest) -> None:
    """``request``'s WebSocket was closed for not sending ``connection_init`` in time."""
    conn = request.protocol
    if isinstance(conn, GuardedRequestHandler):
        conn._guard.init_timed_out()


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
        # Imported here: the application's modules import this one (claim()).
        from features_gql.http.app import METRICS_KEY, server_handler

        wrap = server_handler(self.app)  # before the application is frozen
        plain = await super()._make_server()
        handler = wrap(plain.request_handler)
        metrics = self.app.get(METRICS_KEY)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limits = self._limits
        budget = connection_budget(limits.max_connections, soft)
        self.guard = ConnectionGuard(
            max_connections=budget,
            header_timeout=limits.header_timeout,
            loop=asyncio.get_running_loop(),
            metrics=metrics,
            max_unproven_connections=limits.max_unproven_connections,
            max_unproven_per_address=limits.max_unproven_per_address,
            max_bodies_per_principal=limits.max_bodies_per_principal,
        )
        log.info(
            "connection limits",
            extra={
                "fields": {
                    "max_connections": budget,
                    "header_timeout_s": limits.header_timeout,
                    "body_timeout_s": self.guard.body_timeout,
                    "init_timeout_s": self.guard.init_timeout,
                    "max_unproven_connections": self.guard.max_unproven_connections,
                    "max_unproven_per_address": limits.max_unproven_per_address,
                    "max_bodies_per_principal": limits.max_bodies_per_principal,
                    "open_file_limit": soft,
                }
            },
        )
        if limits.max_connections is not None and budget < limits.max_connections:
            log.warning(
                "max_connections lowered to fit the open-file limit",
                extra={
                    "fields": {
                        "max_connections": budget,
                        "configured": limits.max_connections,
                        "open_file_limit": soft,
                    }
                },
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
