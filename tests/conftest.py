"""Fixtures that run the real service: a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from features_gql import hookimpl
from features_gql.auth import new_secret
from features_gql.bootstrap import Service, build
from features_gql.config import Settings
from features_gql.events import OperationEvent
from features_gql.http.app import create_app
from features_gql.http.connections import ConnectionLimits, GuardedAppRunner


class EventRecorder:
    """A plugin that records operation events through the real hook."""

    def __init__(self) -> None:
        self.events: list[OperationEvent] = []

    @hookimpl
    def features_gql_operation_event(self, event: OperationEvent) -> None:
        self.events.append(event)


@dataclass
class GraphQLResponse:
    status: int
    body: Any
    headers: Any
    content_type: str

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or [])

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


@dataclass
class Server:
    url: str
    service: Service
    session: aiohttp.ClientSession
    app: web.Application
    recorder: EventRecorder = field(default_factory=EventRecorder)
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        """Stop serving: the port closes and open connections end."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> GraphQLResponse:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        async with self.session.post(
            f"{self.url}/graphql", json=payload, headers=headers or {}
        ) as response:
            body = await response.json(content_type=None)
            return GraphQLResponse(response.status, body, response.headers, response.content_type)

    def events(self) -> list[OperationEvent]:
        self.service.dispatcher.flush()
        return list(self.recorder.events)


StartServer = Callable[..., Awaitable[Server]]


def make_tokens(**scopes: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``[auth.tokens]`` tables for Settings(auth_tokens=...), and each token's secret.

    ``make_tokens(bot="read,write")`` makes a token named ``bot`` with those scopes.
    """
    tables: dict[str, dict[str, Any]] = {}
    secrets: dict[str, str] = {}
    for name, listed in scopes.items():
        secret = new_secret()
        secrets[name] = secret
        tables[name] = {
            "scopes": [s for s in listed.split(",") if s],
            "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        }
    return tables, secrets


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start the real service on 127.0.0.1 and a free port; stopped after the test."""
    servers: list[Server] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        store: Any = "memory",
        *,
        extra_plugins: Sequence[object] = (),
        **settings: Any,
    ) -> Server:
        recorder = EventRecorder()
        settings.setdefault("loggers", ())
        service = build(Settings(store=store, **settings), extra_plugins=[recorder, *extra_plugins])
        # The service's own runner, as `serve` starts it: connections guarded, and the
        # application's observer run around it by the server.
        runner = GuardedAppRunner(create_app(service), ConnectionLimits.of(service.settings))
        await runner.setup()
        # Server.events() are the store calls made since the service began serving: the
        # start-up's own (loading the catalog's view) are no test's subject.
        service.dispatcher.flush()
        recorder.events.clear()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        sessions.append(session)
        server = Server(f"http://127.0.0.1:{port}", service, session, runner.app, recorder, runner)
        servers.append(server)
        return server

    yield start
    for session in sessions:
        await session.close()
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server("memory")


# -- MongoDB (tests/mongodb_server.py) ----------------------------------------------------
# The embedded MongoDB wire-protocol server (or MONGODB_URL), for every test module.
# -- Chromium (tests/browser.py) ----------------------------------------------------------
# One headless Chromium per test module, for the control panel's tests.
from tests.browser import browser  # noqa: E402, F401
from tests.mongodb_server import (  # noqa: E402, F401
    mongodb_admin,
    mongodb_database,
    mongodb_server,
    mongodb_url,
)

# -- PostgreSQL (tests/postgres_server.py) ------------------------------------------------
# A PostgreSQL server started from the machine's installation (or POSTGRES_URL), shared by
# the whole session; its own schema for each test.
from tests.postgres_server import (  # noqa: E402, F401
    own_postgres,
    postgres_admin,
    postgres_schema,
    postgres_server,
    postgres_template,
    postgres_url,
)
