"""The real service on 127.0.0.1, on an event loop of its own in a background thread.

For clients that block (the OpenFeature OFREP provider and schemathesis use requests):
called from a test's event loop, a server on that same loop could never answer them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from aiohttp import web

from features_gql.bootstrap import Service, build
from features_gql.config import Settings
from features_gql.http.app import create_app


@dataclass
class ServiceThread:
    url: str
    service: Service
    loop: asyncio.AbstractEventLoop

    def gql(self, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
        response = requests.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers=headers,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


@contextmanager
def service_thread(store: Any = "memory", **settings: Any) -> Iterator[ServiceThread]:
    settings.setdefault("loggers", ())
    service = build(Settings(store=store, **settings))
    loop = asyncio.new_event_loop()
    started: Future[str] = Future()
    stop = asyncio.Event()

    async def run() -> None:
        runner = web.AppRunner(create_app(service))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            started.set_result(f"http://127.0.0.1:{runner.addresses[0][1]}")
            await stop.wait()
        finally:
            await runner.cleanup()

    def main() -> None:
        try:
            loop.run_until_complete(run())
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="features-gql-test-service", daemon=True)
    thread.start()
    try:
        yield ServiceThread(started.result(timeout=30), service, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
