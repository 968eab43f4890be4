"""The members of aiohttp that the connection guard (features_gql/http/connections.py)
relies on without aiohttp documenting them. pyproject.toml allows aiohttp below 4; a
release that changes one of these fails here, naming it, rather than in production."""

from __future__ import annotations

import inspect

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from features_gql.http.connections import GuardedAppRunner, GuardedRequestHandler, GuardedServer


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_runner_makes_and_cleans_up_its_server_through_these_coroutines() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    assert inspect.iscoroutinefunction(web.AppRunner._cleanup_server)
    assert _parameters(web.AppRunner._make_server) == ["self"]


async def test_a_server_exposes_what_the_guarded_server_is_built_from() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler, request_factory=None, handler_cancellation=True, access_log=None)
    assert server.request_handler is handler
    assert callable(server.request_factory)
    assert server.handler_cancellation is True
    assert server._kwargs == {"access_log": None}
    assert server._loop is not None
    assert issubclass(GuardedServer, web.Server)


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("data_received", ["self", "data"]),
        ("finish_response", ["self", "request", "resp", "start_time"]),
        ("handle_error", ["self", "request", "status", "exc", "message"]),
        ("connection_made", ["self", "transport"]),
        ("connection_lost", ["self", "exc"]),
        ("force_close", ["self"]),
    ],
)
def test_the_request_handler_has_the_methods_the_guard_overrides(
    method: str, parameters: list[str]
) -> None:
    assert _parameters(getattr(RequestHandler, method)) == parameters
    assert getattr(GuardedRequestHandler, method) is not None


async def test_the_guarded_runner_serves() -> None:
    """The whole seam at once: a guarded runner starts, answers and stops."""
    import aiohttp

    from features_gql.http.connections import ConnectionLimits

    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    runner = GuardedAppRunner(app, ConnectionLimits())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert await response.text() == "hello"
        assert runner.guard is not None
        assert runner.guard.open in (0, 1)  # the client's keep-alive connection, if open
    finally:
        await runner.cleanup()
