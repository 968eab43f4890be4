"""The aiohttp application: /graphql, /healthz, request ids, and no tracebacks to clients."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from features_gql.api import FeaturesAPI
from features_gql.bootstrap import Service
from features_gql.graphql.schema import build_schema
from features_gql.http.view import REQUEST_KEY, FeaturesGraphQLView
from features_gql.request_context import request_id

log = logging.getLogger("features_gql.http")

SERVICE_KEY = web.AppKey("features_gql.service", Service)
MAX_REQUEST_ID = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id_from(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's ``X-Request-ID`` or a new one), echo it, and
    answer anything unexpected with a JSON error that names it instead of a traceback."""
    rid = _request_id_from(request)
    request[REQUEST_KEY] = rid
    token = request_id.set(rid)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-ID"] = rid
        raise
    except Exception:
        log.exception(
            "unhandled error answering %s %s",
            request.method,
            request.path,
            extra={"fields": {"request_id": rid}},
        )
        body = {
            "errors": [
                {
                    "message": f"Internal error; quote request id {rid} when reporting it.",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": rid},
                }
            ]
        }
        response = web.json_response(body, status=500)
    finally:
        request_id.reset(token)
    response.headers["X-Request-ID"] = rid
    log.debug(
        "%s %s -> %s",
        request.method,
        request.path,
        response.status,
        extra={
            "fields": {
                "request_id": rid,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        },
    )
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Deliberately does not touch the store."""
    return web.json_response({"status": "ok"})


def mount_graphql(
    app: web.Application,
    api: FeaturesAPI,
    *,
    path: str = "/graphql",
    introspection: bool = True,
    graphiql: bool = True,
) -> None:
    """Serve the GraphQL API of ``api`` at ``path`` in an existing aiohttp application.

    This is how an application embeds features-gql (keeping the data in its own
    database) while letting the control plane write over GraphQL. Add
    :func:`request_context` to the application's middlewares for request ids.
    """
    view = FeaturesGraphQLView(
        api,
        schema=build_schema(introspection=introspection),
        graphql_ide="graphiql" if graphiql else None,
    )
    app.router.add_route("GET", path, view)
    app.router.add_route("POST", path, view)
    app.router.add_route("*", path, _method_not_allowed)


async def _method_not_allowed(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "errors": [
                {
                    "message": "GraphQL accepts GET and POST only.",
                    "extensions": {"code": "METHOD_NOT_ALLOWED"},
                }
            ]
        },
        status=405,
        headers={"Allow": "GET, POST"},
    )


def create_app(service: Service) -> web.Application:
    """The standalone service: GraphQL at /graphql, liveness at /healthz."""
    app = web.Application(middlewares=[request_context], client_max_size=4 * 1024 * 1024)
    app[SERVICE_KEY] = service
    mount_graphql(
        app,
        service.api,
        introspection=service.settings.introspection,
        graphiql=service.settings.graphiql,
    )
    app.router.add_get("/healthz", healthz)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await service.start()
        log.info(
            "store ready",
            extra={"fields": {"store": service.store.name, "config": service.store_description}},
        )
        yield
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
