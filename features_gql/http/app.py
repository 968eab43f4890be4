"""The aiohttp application: /graphql, health, metrics, request ids and request logs."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST

from features_gql.api import FeaturesAPI
from features_gql.auth import AuthPolicy
from features_gql.bootstrap import Service
from features_gql.edge import EdgeSync
from features_gql.events import OperationEvent
from features_gql.feed import ChangeFeed
from features_gql.graphql.admission import Limits
from features_gql.graphql.schema import build_schema
from features_gql.http.admin import add_admin_routes
from features_gql.http.cors import cors_middleware
from features_gql.http.graphiql import graphiql_page
from features_gql.http.headers import undecodable_header
from features_gql.http.ofrep import EVALUATE_PREFIX, mount_ofrep
from features_gql.http.pipeline import (
    PIPELINE_KEY,
    Outcome,
    Pipeline,
    RequestScope,
    public,
    throttled_log,
    too_many_requests,
)
from features_gql.http.responses import SERVER, error_response
from features_gql.http.ui import mount_ui
from features_gql.http.view import FeaturesGraphQLView
from features_gql.metrics import Metrics
from features_gql.rate_limits import RateLimits
from features_gql.request_context import request_id, request_operations

log = logging.getLogger("features_gql.http")
request_log = logging.getLogger("features_gql.request")

SERVICE_KEY = web.AppKey("features_gql.service", Service)
METRICS_KEY = web.AppKey("features_gql.metrics", Metrics)
SLOW_KEY = web.AppKey("features_gql.slow_request_seconds", float)
#: The middleware :func:`create_app` observes requests with, and its hottest endpoints:
#: what :func:`server_handler` moves out of aiohttp's way.
OBSERVER_KEY: web.AppKey[Middleware] = web.AppKey("features_gql.observer")
HOT_KEY: web.AppKey[HotPosts] = web.AppKey("features_gql.hot_posts")
MAX_REQUEST_ID = 128
#: Readiness must answer fast even when the store hangs: probes come every second.
READINESS_TIMEOUT = 0.5
SLOWEST_SHOWN = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServerHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
KeyHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


class HotPosts(NamedTuple):
    """The POST endpoints flag checks arrive at: the GraphQL path and its view, and the
    prefix of OFREP's single evaluations and the handler taking the key after it."""

    graphql: tuple[str, Handler]
    evaluate: tuple[str, KeyHandler]


#: Request ids this process makes: a random prefix per process, then a counter. Unique
#: across processes and restarts for all practical purposes, and far cheaper than a
#: random id per request.
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def _internal_error(rid: str) -> web.Response:
    return error_response(
        500,
        f"Internal error; quote request id {rid} when reporting it.",
        "INTERNAL_SERVER_ERROR",
        requestId=rid,
    )


def server_handler(app: web.Application) -> Callable[[ServerHandler], ServerHandler]:
    """For a server that runs :func:`create_app`'s application (the service's own runner
    does): call it before the application is frozen, and pass what it returns the
    application's handler (the request handler aiohttp's runner made); run what that
    returns instead.

    When the application's observer is its one middleware (CORS, when configured, must
    stay outside it), it is taken out of the middlewares and run around the whole
    application instead: every request is observed as before, routing failures (404,
    405) included, without aiohttp's middleware chain (two coroutines and a cache lookup
    per request). The application then does nothing for a ``POST`` to the GraphQL path
    or to an OFREP single evaluation but route it, so the server hands those to their
    handlers directly: a flag check does not wait for the router (two more coroutines
    and a match object).

    Otherwise the application is left as it is, and its handler run unchanged.
    """
    observer = app.get(OBSERVER_KEY)
    middlewares = app.middlewares
    if observer is None or middlewares.frozen or list(middlewares) != [observer]:
        return lambda handler: handler
    middlewares.remove(observer)
    hot = app.get(HOT_KEY)

    def observed(server: ServerHandler) -> ServerHandler:
        # The server's requests are the application's (web.Request, made by its factory).
        handler = cast(Handler, server)
        # Checked once frozen: a response-prepare signal is run by the routed path only.
        if hot is not None and not app.middlewares and not app.on_response_prepare:
            handler = _hot_first(hot, handler)
        return cast(ServerHandler, functools.partial(observer, handler=handler))

    return observed


def _hot_first(hot: HotPosts, routed: Handler) -> Handler:
    graphql_path, graphql = hot.graphql
    evaluate_prefix, evaluate = hot.evaluate
    skip = len(evaluate_prefix)

    # Not a coroutine: it hands back the handler's own, one coroutine less per request.
    def dispatch(request: web.Request) -> Awaitable[web.StreamResponse]:
        # An `Expect: 100-continue` is answered by the routed path, before the body is read.
        if request.method == "POST" and "Expect" not in request.headers:
            path = request.path
            if path == graphql_path:
                return graphql(request)
            if path.startswith(evaluate_prefix):
                # The key as the router decodes it (tests/test_observer_placement.py).
                return evaluate(request, path[skip:])
        return routed(request)

    return dispatch


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's ``X-Request-ID`` or a new one) and echo it;
    log one line per GraphQL request; answer anything unexpected with a JSON error that
    names the request id instead of a traceback.

    Metrics, the slow-request threshold and the pipeline are the application's
    (``METRICS_KEY``, ``SLOW_KEY``, ``PIPELINE_KEY``), looked up per request;
    :func:`observing` binds them once instead.
    """
    app = request.app
    return await _observe(
        request, handler, app.get(METRICS_KEY), app.get(SLOW_KEY), app.get(PIPELINE_KEY)
    )


def observing(
    metrics: Metrics | None, slow_request_seconds: float | None, pipeline: Pipeline | None = None
) -> Middleware:
    """:func:`request_context` with its metrics, slow-request threshold and pipeline bound
    once, for an application that knows them when it is built (the standalone service):
    no lookup per request, and no extra coroutine between aiohttp and the handler."""
    bound = functools.partial(
        _observe, metrics=metrics, slow=slow_request_seconds, pipeline=pipeline
    )
    bound.__middleware_version__ = 1  # type: ignore[attr-defined]  # what @web.middleware sets
    return cast(Middleware, bound)


#: Answered whatever the client's limits: a load balancer's probes must not be refused
#: because the address they come from is busy.
PROBES = frozenset({"/healthz", "/readyz"})
#: Made per request when the application has no pipeline (an embedding application that
#: mounted an entrance with its own): ids, the deadline and the outcome, no limits.
_NO_PIPELINE = Pipeline(rate_limits=RateLimits.off())


async def _observe(
    request: web.Request,
    handler: Handler,
    metrics: Metrics | None,
    slow: float | None,
    pipeline: Pipeline | None = None,
) -> web.StreamResponse:
    given = request.headers.get("X-Request-ID")
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        rid = given
    else:
        rid = f"{_ID_PREFIX}{next(_id_counter):08x}"
    scope = (pipeline or _NO_PIPELINE).begin(request, rid)
    # Context variables carry the request's id and its store calls into the core, whose
    # store calls are made far below any argument an entrance could pass them.
    token = request_id.set(rid)
    ops_token = request_operations.set(scope.operations)
    if metrics is not None:
        metrics.request_started()
    started = time.perf_counter()
    try:
        bad_header = undecodable_header(request.raw_headers)
        response: web.StreamResponse
        if bad_header is not None:
            response = error_response(
                400, f"Header {bad_header} is not valid UTF-8.", "INVALID_HEADER"
            )
        elif len(request.headers.getall("Authorization", ())) > 1:
            # Which of two tokens a request speaks for is not to be guessed: every way in
            # would read the first, a proxy before it perhaps the last.
            response = error_response(
                400, "Send one Authorization header, not several.", "INVALID_HEADER"
            )
        elif (
            pipeline is not None
            and request.path not in PROBES
            and (limited := pipeline.limit_address(scope)) is not None
        ):
            response = too_many_requests(limited)
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            exc.headers["X-Request-ID"] = rid
            exc.headers["Server"] = SERVER
            raise
        response = _http_error(request, exc)
    except Exception as exc:
        if _client_went_away(request, exc):
            # Nobody is left to answer, and a traceback per vanished client would flood
            # the log.
            log.debug("client closed the connection before its request arrived")
            response = error_response(400, "The connection closed before the request arrived.")
        else:
            log.exception(
                "unhandled error answering %s %s",
                request.method,
                request.path,
                extra={"fields": {"request_id": rid}},
            )
            response = _internal_error(rid)
    finally:
        seconds = time.perf_counter() - started
        request_id.reset(token)
        request_operations.reset(ops_token)
        if metrics is not None:
            metrics.request_finished()
    headers = response.headers
    headers["X-Request-ID"] = rid
    # Named here rather than by an on_response_prepare signal (a coroutine per response);
    # aiohttp would otherwise name itself and its version. The connection guard names
    # answers written outside the application, and the WebSocket handshake names itself.
    headers["Server"] = SERVER
    outcome = scope.outcome
    if outcome is None:
        # Not an operation (a probe, a file, a refusal before any entrance): counted by
        # its route and status, and logged when it was refused.
        status = response.status
        if metrics is not None:
            metrics.observe_http(_route_of(request), status)
        if status >= 400 and status != 404:
            _log_refused(scope, request, status)
        return response
    if metrics is not None:
        metrics.observe_request(
            outcome.operation, outcome.outcome, seconds, outcome.codes, outcome.protocol
        )
    if outcome.outcome != "ok" and not outcome.write:
        # A client can repeat a refused request as fast as it likes: its lines are
        # counted per client and interval rather than written one by one.
        _log_refused(scope, request, response.status, outcome)
        if slow is None or seconds < slow:
            return response
    # A flag check that went well is counted by the metrics; a line for each would be
    # thousands a second. Writes are logged at INFO (the audit trail).
    level = logging.INFO if outcome.write else logging.DEBUG
    too_slow = slow is not None and seconds >= slow
    if too_slow or request_log.isEnabledFor(level):
        threshold = slow if too_slow else None
        _log_request(rid, seconds, response.status, outcome, scope.operations, level, threshold)
    return response


def _route_of(request: web.Request) -> str:
    """The route a request matched, as a bounded metrics label (``unrouted`` for one the
    observer answered itself, before any routing)."""
    if request.path in PROBES:
        return request.path
    try:
        resource = request.match_info.route.resource
    except (AssertionError, AttributeError):  # aiohttp asserts it was routed
        return "unrouted"
    return resource.canonical if resource is not None else "unmatched"


def _log_refused(
    scope: RequestScope, request: web.Request, status: int, outcome: Outcome | None = None
) -> None:
    """One line per client and interval for requests refused or failed, with a count."""
    fields: dict[str, Any] = {
        "request_id": scope.request_id,
        "remote": scope.address,
        "method": request.method,
        "path": request.path[:200],
        "status": status,
    }
    if outcome is not None:
        fields["operation"] = outcome.operation or "anonymous"
        fields["outcome"] = outcome.outcome
        fields["errors"] = ",".join(sorted(set(outcome.codes))) or None
        message = f"{outcome.protocol} request"
    else:
        message = "http request"
    throttled_log(request_log).event(
        f"refused {scope.address}",
        message,
        level=logging.INFO,
        **fields,
    )


def _client_went_away(request: web.Request, exc: Exception) -> bool:
    """aiohttp's reads raise ConnectionResetError when the client closes mid-request."""
    transport = request.transport
    return isinstance(exc, ConnectionResetError) and (transport is None or transport.is_closing())


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's plain-text 404, 405, 413... as the JSON error every other answer uses."""
    if exc.status == 404:
        message = f"Not found: {request.path}"
    elif exc.status == 405:
        message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow')}."
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        message = exc.text  # aiohttp's own wording, e.g. the body size limit
    else:
        message = exc.reason
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    return error_response(exc.status, message, headers=headers)


def _log_request(
    rid: str,
    seconds: float,
    status: int,
    outcome: Outcome,
    operations: list[OperationEvent],
    level: int,
    threshold: float | None,
) -> None:
    """The request's line at ``level`` (when enabled), and a warning when it took longer
    than ``threshold`` (None: it did not)."""
    fields: dict[str, object] = {
        "request_id": rid,
        "operation": outcome.operation or "anonymous",
        "duration_ms": round(seconds * 1000, 3),
        "status": status,
        "outcome": outcome.outcome,
        "errors": ",".join(sorted(set(outcome.codes))) or None,
        "store_calls": len(operations),
    }
    if request_log.isEnabledFor(level):
        request_log.log(level, f"{outcome.protocol} request", extra={"fields": fields})
    if threshold is not None:
        slowest = sorted(operations, key=lambda e: e.duration, reverse=True)[:SLOWEST_SHOWN]
        fields = {
            **fields,
            "slowest_store_calls": ", ".join(
                f"{e.op}={e.duration * 1000:.1f}ms({e.outcome})" for e in slowest
            )
            or "none",
            "threshold_ms": round(threshold * 1000, 3),
        }
        request_log.warning(f"slow {outcome.protocol} request", extra={"fields": fields})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Deliberately does not touch the store."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers a cheap probe within a short deadline. An edge is
    ready while it serves a copy, whether or not its upstream answers, and says how stale
    the copy is; past ``max_staleness`` (when set) it is not ready."""
    service = request.app[SERVICE_KEY]
    probe = await service.api.probe(READINESS_TIMEOUT)
    service.metrics.store_up.set(1 if probe.up else 0)
    ready = probe.up
    body: dict[str, object] = {
        "status": "ready",
        "store": probe.store,
        "probe_ms": round(probe.seconds * 1000, 3),
    }
    if not probe.up:
        body["reason"] = f"store {probe.reason}"
    # Every copy the service keeps (the catalog view, the change feed, an edge's copy),
    # from its follower's one status; what makes an edge unready is said below.
    body["followers"] = {
        name: {
            "state": status.state,
            "revision": status.revision,
            "source_revision": status.source_revision,
            "lag_seconds": None if status.lag_seconds is None else round(status.lag_seconds, 3),
            "last_error": status.last_error,
        }
        for name, status in service.followers().items()
    }
    if service.edge is not None:
        status = service.edge.status()
        staleness = status.lag_seconds
        limit = service.settings.max_staleness
        body["upstream"] = {
            "url": status.upstream,
            "connected": status.connected,
            "state": status.state,
            "last_error": status.last_error,
            "revision": status.revision,
            "upstream_revision": status.upstream_revision,
            "staleness_seconds": None if staleness is None else round(staleness, 3),
            "max_staleness_seconds": limit,
        }
        if status.revision is None:
            ready = False
            body.setdefault("reason", "no copy of the upstream yet")
        elif limit is not None and staleness is not None and staleness > limit:
            ready = False
            body.setdefault(
                "reason", f"the copy is {staleness:.1f} s old (max_staleness {limit:g} s)"
            )
    if not ready:
        body["status"] = "unavailable"
    return web.json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    needs = service.auth.metrics_scope
    if needs is not None:
        entered = request.app[PIPELINE_KEY].enter_http(request, needs, realm="features-gql metrics")
        if isinstance(entered, web.Response):
            return entered
    metrics = request.app[METRICS_KEY]
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def mount_graphql(
    app: web.Application,
    api: FeaturesAPI,
    *,
    path: str = "/graphql",
    auth: AuthPolicy | None = None,
    limits: Limits | None = None,
    introspection: bool = True,
    graphiql: bool = True,
    fast_path: bool = True,
    feed: ChangeFeed | None = None,
    metrics: Metrics | None = None,
    sync: EdgeSync | None = None,
    pipeline: Pipeline | None = None,
) -> FeaturesGraphQLView:
    """Serve the GraphQL API of ``api`` at ``path`` in an existing aiohttp application;
    returns the view that answers there.

    This is how an application embeds features-gql (keeping the data in its own
    database) while letting the control plane write over GraphQL. Without ``auth``
    anyone who reaches ``path`` may read and write: pass an :class:`AuthPolicy` with
    tokens, or guard the route yourself. Add :func:`request_context` to the
    application's middlewares for request ids, request logs and metrics.

    With a ``feed`` (a :class:`~features_gql.feed.ChangeFeed` of ``api``), ``path`` also
    serves the ``featureChanges`` subscription over WebSocket (graphql-transport-ws).

    With ``graphiql``, a browser opening ``path`` gets GraphiQL, whose files are served
    from the package at ``graphiql/`` beside ``path`` (``/graphql`` → ``/graphiql/...``).
    """
    if pipeline is None:
        pipeline = Pipeline(auth, metrics=metrics)
    page = None
    if graphiql:
        anonymous_reads = pipeline.auth.anonymous_principal.can("read")
        page = graphiql_page(path, anonymous_reads=anonymous_reads)
        public(app, *page.mount(app))
    view = FeaturesGraphQLView(
        api,
        pipeline=pipeline,
        fast_path=fast_path,
        feed=feed,
        metrics=metrics,
        sync=sync,
        schema=build_schema(introspection=introspection, limits=limits),
        graphiql=page,
    )
    app.router.add_route("GET", path, view)
    app.router.add_route("POST", path, view)
    app.router.add_route("*", path, _method_not_allowed)
    return view


async def _method_not_allowed(request: web.Request) -> web.Response:
    return error_response(
        405,
        "GraphQL accepts GET and POST only.",
        "METHOD_NOT_ALLOWED",
        headers={"Allow": "GET, POST"},
    )


def create_app(service: Service) -> web.Application:
    """The standalone service: /graphql, /ofrep/v1, /ui, /healthz, /readyz and /metrics."""
    # CORS is outermost so that its headers reach every answer, errors included.
    cors = [cors_middleware(service.settings.cors_origins)] if service.settings.cors_origins else []
    slow = service.settings.slow_request_ms / 1000
    pipeline = Pipeline(
        service.auth, rate_limits=service.settings.rate_limits, metrics=service.metrics
    )
    observer = observing(service.metrics, slow, pipeline)
    app = web.Application(middlewares=[*cors, observer], client_max_size=4 * 1024 * 1024)
    app[OBSERVER_KEY] = observer
    app[PIPELINE_KEY] = pipeline
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = service.metrics
    app[SLOW_KEY] = slow
    view = mount_graphql(
        app,
        service.api,
        auth=service.auth,
        limits=service.settings.limits,
        introspection=service.settings.introspection,
        graphiql=service.settings.graphiql,
        fast_path=service.settings.fast_path,
        feed=service.feed,
        metrics=service.metrics,
        sync=service.edge,
        pipeline=pipeline,
    )
    # OpenFeature's remote evaluation protocol (OFREP): the same api, tokens and limits.
    ofrep = mount_ofrep(
        app,
        service.api,
        pipeline=pipeline,
        default_resource_type=service.settings.openfeature_default_resource_type,
        catalog=service.catalog,
    )
    app[HOT_KEY] = HotPosts(("/graphql", view), (EVALUATE_PREFIX, ofrep.evaluate_flag))
    if service.settings.ui:
        # The control panel: static files; its data comes from /graphql with a token.
        public(app, *mount_ui(app, anonymous_reads=service.auth.anonymous_principal.can("read")))
    public(app, app.router.add_get("/healthz", healthz).resource)
    public(app, app.router.add_get("/readyz", readyz).resource)
    metrics_route = app.router.add_get("/metrics", metrics_endpoint)
    if service.auth.metrics_scope is None:
        public(app, metrics_route.resource)  # [auth] metrics = "open"
    add_admin_routes(app, service, pipeline)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await service.start()
        # The readiness gauge starts from a real probe rather than the default 0. The
        # catalog's view loads meanwhile, before the first request; both are bounded, so
        # a store that hangs delays the start by READINESS_TIMEOUT at most (the view then
        # loads in the background).
        probe, _ = await asyncio.gather(
            service.api.probe(READINESS_TIMEOUT), service.start_catalog(READINESS_TIMEOUT)
        )
        service.metrics.store_up.set(1 if probe.up else 0)
        fields = {"store": service.store.name, "config": service.store_description}
        if probe.up:
            log.info("store ready", extra={"fields": fields})
        else:
            # Serve anyway: the store may come back (MongoDB restarting), and /readyz
            # keeps traffic away until it does.
            log.warning(
                "store not ready at start-up; serving anyway, /readyz answers 503 until it is",
                extra={"fields": {**fields, "reason": f"store {probe.reason}"}},
            )
        yield
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
