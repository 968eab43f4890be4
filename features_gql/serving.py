"""Runs the HTTP service: one process, or a pre-forked pool of workers on one socket.

The listening socket is bound once, first, by the process the command started: a port
that is taken (by anything, another features-gql included) fails there with one clear
line, before anything is announced. ``--workers N`` then forks N processes that all
accept connections on that one socket (the pre-fork model). No SO_REUSEPORT: with it,
a second server started on the same port would silently share the traffic, each
answering from its own data.

The parent only supervises: it announces the service once every worker is serving,
forwards SIGTERM/SIGINT, and if a worker fails to start or dies, stops the others and
exits non-zero so the process manager (systemd, Kubernetes) restarts the service whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web
from prometheus_client import multiprocess

from features_gql import __version__
from features_gql.auth import check_exposure
from features_gql.bootstrap import Service, build
from features_gql.config import Settings
from features_gql.errors import ConfigError, FeaturesError, StartupError
from features_gql.http.app import METRICS_KEY, create_app
from features_gql.http.connections import (
    KEEPALIVE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    AcceptErrorHandler,
    ConnectionLimits,
    GuardedAppRunner,
    raise_open_file_limit,
)
from features_gql.metrics import shared_between_processes

log = logging.getLogger("features_gql.serving")

#: How long the supervisor gives the store to create its files before forking workers.
PREPARE_SECONDS = 10.0
#: Connections the kernel queues before a worker accepts them (aiohttp's default).
BACKLOG = 128
#: Allocations between collections of the young generation while serving (Python's
#: default is 700). Cyclic garbage waits for at most this many allocations: a few MB.
YOUNG_COLLECTION_THRESHOLD = 10_000


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on every address ``host`` resolves to (``localhost``: IPv4 and 6).

    With port 0 the kernel picks a free port for the first address and the others reuse it.
    """
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot serve on {where}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # Restarting while the last run's connections linger in TIME_WAIT is fine; a
            # socket still listening on the port makes bind fail all the same.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot serve on {where}: {reason[:1].lower()}{reason[1:]}") from None
    return sockets


def serve(settings: Settings) -> int:
    check_exposure(settings.host, tokens=bool(settings.auth_tokens), anonymous=settings.anonymous)
    # Built first, so a bad configuration fails before the port is taken. With workers,
    # each builds its own after the fork (stores hold connections and threads that must
    # not be forked); this one only checks the configuration.
    service = build(settings)
    if settings.workers > 1 and not service.store.shared_between_processes:
        raise ConfigError(
            f"store {service.store.name!r} keeps its data inside one process, so "
            f"{settings.workers} workers would each see different flags; use a store "
            "that processes share (sqlite, mongodb) or --workers 1"
        )
    # Connections and the store's files need descriptors: take all the system allows.
    raise_open_file_limit()
    sockets = listen(settings.host, settings.port)
    try:
        url = _url(settings.host, sockets[0].getsockname()[1])
        description = service.store_description

        def announce() -> None:
            _announce(settings, url, description)

        if settings.workers == 1:
            _run(service, sockets, announce)
            return 0
        # The store's files, tables or indexes are created once, here, before the workers
        # start: several workers creating one fresh SQLite file at once collide ("database
        # is locked"). Opened and closed again: threads and connections must not be forked.
        asyncio.run(_prepare(service))
        del service
        return _supervise(settings, sockets, announce)
    finally:
        for sock in sockets:
            sock.close()


async def _prepare(service: Service) -> None:
    # Bounded, and never fatal here: a store that is down or slow is the workers' to
    # report (they serve anyway, and /readyz says why).
    try:
        async with asyncio.timeout(PREPARE_SECONDS):
            try:
                await service.store.open()
            finally:
                await service.store.close()
    except Exception as exc:
        log.debug("the store could not be prepared before the workers start: %s", exc)


def _run(
    service: Service,
    sockets: list[socket.socket],
    on_ready: Callable[[], None],
    *,
    lifeline: int | None = None,
) -> None:
    """Serve ``service`` on ``sockets`` until SIGTERM or SIGINT; ``on_ready`` once serving.

    A worker of a pool passes its ``lifeline``: the read end of a pipe whose write end only
    the supervising process holds.
    """
    limits = ConnectionLimits.of(service.settings)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C while starting
        asyncio.run(_serve(create_app(service), sockets, on_ready, limits, lifeline=lifeline))


async def _serve(
    app: web.Application,
    sockets: list[socket.socket],
    on_ready: Callable[[], None],
    limits: ConnectionLimits,
    *,
    lifeline: int | None,
) -> None:
    # What web.run_app does, with control over how connections are accepted and when
    # signals start to mean "drain and stop".
    shared = lifeline is not None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Running out of file descriptors is said once per interval, with a count.
    accept_errors = AcceptErrorHandler(loop, app.get(METRICS_KEY), loop.get_exception_handler())
    loop.set_exception_handler(accept_errors)
    # Connections are bounded in number and in the time they may take to send a request.
    runner = GuardedAppRunner(
        app,
        limits,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    try:
        await runner.setup()  # the app's start-up: the store is open and probed after this
        for sock in sockets:
            if shared:
                # asyncio accepts up to `backlog` connections each time the socket turns
                # readable. On a socket that every worker listens on, the first worker to
                # wake would take a whole burst of new connections (all 32 of a load test,
                # or of a client's connection pool) and leave the others idle. One accept
                # per wake-up lets each worker take its turn, and a busy worker, slower to
                # come back for more, takes fewer.
                await web.SockSite(runner, sock, backlog=1).start()
                # asyncio also passed that 1 to listen(): give the queue its length back.
                sock.listen(BACKLOG)
            else:
                await web.SockSite(runner, sock, backlog=BACKLOG).start()
        # Everything built at start-up lives as long as the process: keep it out of the
        # cyclic garbage collector's generations, which shortens collections on the hot path.
        gc.collect()
        gc.freeze()
        # A batch of 1,000 checks allocates several thousand containers per request,
        # nearly all freed when it is answered; collecting the young generation every 700
        # allocations (the default) walked each request's live objects again and again.
        # Collecting less often measured ~10% less CPU for such requests (benchmarks/).
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)
        # Until now SIGTERM ends the process at once: there is nothing to drain, and a
        # worker the supervisor stops while it starts has nothing to say.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if lifeline is not None:
            loop.add_reader(lifeline, _orphaned, lifeline, stop)
        on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()
        accept_errors.close()


def _orphaned(lifeline: int, stop: asyncio.Event) -> None:
    """The supervisor is gone (killed with SIGKILL, say): stop as SIGTERM would, so no
    worker is left behind holding the port."""
    asyncio.get_running_loop().remove_reader(lifeline)
    log.warning("the supervising process is gone; this worker stops")
    stop.set()


def _worker(
    settings: Settings,
    sockets: list[socket.socket],
    report: Connection,
    lifeline: tuple[int, int],
) -> None:
    """One worker process: serve on the inherited sockets; tell the parent how start-up went."""
    watched, held = lifeline
    # Only the supervisor may hold the write end: when it exits, the pipe reads as closed.
    os.close(held)
    try:
        _run(build(settings), sockets, lambda: report.send(None), lifeline=watched)
    except FeaturesError as exc:
        # The parent prints it once, for all the workers that hit the same problem.
        report.send(str(exc))
        sys.exit(2)


def _supervise(
    settings: Settings, sockets: list[socket.socket], announce: Callable[[], None]
) -> int:
    context = multiprocessing.get_context("fork")
    #: Each worker's process, by its sentinel, and the pipe it reports its start-up on.
    workers: dict[int, BaseProcess] = {}
    reports: dict[int, Connection] = {}
    # Workers watch the read end; this process holds the write end until it exits.
    lifeline = os.pipe()
    for _ in range(settings.workers):
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(
            target=_worker, args=(settings, sockets, send, lifeline), daemon=False
        )
        worker.start()
        send.close()  # the worker holds the only sending end: its exit means end of file
        workers[worker.sentinel] = worker
        reports[worker.sentinel] = receive
    os.close(lifeline[0])

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers.values():
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    ready = 0
    failure: str | None = None

    def read(sentinel: int) -> None:
        """Take in what one worker reported: serving (None), or why it could not start."""
        nonlocal ready, failure
        connection = reports.get(sentinel)
        if connection is None:
            return
        try:
            while connection.poll():
                message = connection.recv()
                if message is None:
                    ready += 1
                    if ready == settings.workers:
                        announce()
                elif failure is None:
                    failure = str(message)
        except EOFError:
            del reports[sentinel]
            connection.close()

    failed = False
    running = dict(workers)
    while running:
        sentinels = {id(connection): sentinel for sentinel, connection in reports.items()}
        for item in wait([*reports.values(), *running]):
            if isinstance(item, Connection):
                read(sentinels[id(item)])
                continue
            assert isinstance(item, int)
            ended = running.pop(item)
            ended.join()
            if ended.pid is not None and shared_between_processes():
                # Its live gauges (in flight, store up) no longer count.
                multiprocess.mark_process_dead(ended.pid)  # type: ignore[no-untyped-call]
            read(item)  # a worker that could not start said why just before it exited
            if ended.exitcode in (0, -signal.SIGTERM, -signal.SIGINT) or failed:
                continue
            failed = True
            if failure is None:
                print(
                    f"features-gql: worker {ended.pid} exited with {ended.exitcode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
            for other in running.values():
                other.terminate()
    if failure is not None:
        raise StartupError(failure)
    return 1 if failed else 0


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/graphql"


def _announce(settings: Settings, url: str, store: str) -> None:
    fields = {"url": url, "store": store, "workers": settings.workers}
    if log.hasHandlers():
        log.info(f"features-gql {__version__} serving GraphQL", extra={"fields": fields})
        return
    # No logger configured ([logging] loggers = []): still say where the service is.
    print(
        f"features-gql {__version__} serving GraphQL on {url} (store: {store}, "
        f"{settings.workers} worker{'s' if settings.workers > 1 else ''})",
        file=sys.stderr,
        flush=True,
    )
