"""Runs the HTTP service: one process, or a pool of worker processes sharing one port.

Python answers requests on one core per process; ``--workers N`` starts N processes
that each bind the same port with SO_REUSEPORT, so the kernel spreads connections
across them. The parent only supervises: it forwards SIGTERM/SIGINT and, if a worker
dies, stops the others and exits non-zero so the process manager (systemd, Kubernetes)
restarts the service as a whole.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from types import FrameType

from aiohttp import web

from features_gql import __version__
from features_gql.bootstrap import Service, build
from features_gql.config import Settings
from features_gql.errors import ConfigError
from features_gql.http.app import create_app
from features_gql.http.connections import ConnectionLimits, run_app

log = logging.getLogger("features_gql.serving")


def _run(settings: Settings, *, reuse_port: bool, service: Service | None = None) -> None:
    app = create_app(service or build(settings))

    async def settle(app: web.Application) -> None:
        # Everything built at start-up lives as long as the process: keep it out of the
        # cyclic garbage collector's generations, which shortens collections on the hot path.
        gc.collect()
        gc.freeze()

    app.on_startup.append(settle)
    # aiohttp's run_app, plus limits on connections and on the time to send headers.
    run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port,
        limits=ConnectionLimits(settings.max_connections, settings.header_timeout),
    )


def serve(settings: Settings) -> int:
    if settings.workers == 1:
        service = build(settings)
        _announce(settings, service.store_description)
        _run(settings, reuse_port=False, service=service)
        return 0
    if settings.port == 0:
        raise ConfigError("--workers needs a fixed --port: workers must share one port")
    # Build once in the parent so a bad configuration fails here, before any fork; each
    # worker builds its own (stores hold connections and threads that must not be forked).
    service = build(settings)
    if not service.store.shared_between_processes:
        raise ConfigError(
            f"store {service.store.name!r} keeps its data inside one process, so "
            f"{settings.workers} workers would each see different flags; use a store "
            "that processes share (sqlite, mongodb) or --workers 1"
        )
    _announce(settings, service.store_description)
    del service
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_run, args=(settings,), kwargs={"reuse_port": True}, daemon=False)
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    remaining = list(workers)
    while remaining:
        for worker in list(remaining):
            worker.join(0.2)
            if worker.exitcode is None:
                continue
            remaining.remove(worker)
            if worker.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT) and not failed:
                failed = True
                print(
                    f"features-gql: worker {worker.pid} exited with {worker.exitcode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                for other in remaining:
                    other.terminate()
    return 1 if failed else 0


def _announce(settings: Settings, store: str) -> None:
    workers = f", {settings.workers} workers" if settings.workers > 1 else ""
    print(
        f"features-gql {__version__}: GraphQL on http://{settings.host}:{settings.port}/graphql "
        f"(store: {store}{workers})",
        file=sys.stderr,
        flush=True,
    )
