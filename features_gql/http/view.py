"""Strawberry's aiohttp view, speaking the GraphQL-over-HTTP media types and status codes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from cross_web import HTTPException
from graphql import GraphQLError, OperationType
from strawberry.aiohttp.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from features_gql.api import FeaturesAPI
from features_gql.auth import Principal, Unauthenticated
from features_gql.graphql.admission import Refused
from features_gql.graphql.context import Context
from features_gql.graphql.errors import translate
from features_gql.graphql.fast_path import Answer, FastPath
from features_gql.graphql.schema import FeaturesSchema
from features_gql.http.connections import claim
from features_gql.http.graphiql import GraphiQLPage
from features_gql.http.pipeline import (
    RATE_LIMITED,
    SCOPE_KEY,
    Outcome,
    Pipeline,
    RateLimited,
    RequestScope,
    too_many_requests,
    unauthenticated,
)
from features_gql.http.request_body import (
    BodyError,
    GraphQLBody,
    graphql_request_now,
    read_graphql_request,
)
from features_gql.http.responses import SERVER, error_response
from features_gql.http.subscriptions import (
    CONNECTION_INIT_TIMEOUT,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    OUTBOX_BYTES,
    PRINCIPAL_KEY,
    SEND_TIMEOUT,
    EncodedEvents,
    SubscriptionHandler,
    TextWebSocketAdapter,
)
from features_gql.request_context import request_credentials

#: A subscription is a stream: served over WebSocket only (Strawberry's multipart and
#: event-stream transports are not mounted), so an HTTP request for one is refused.
_SUBSCRIPTION_OVER_HTTP = Refused(
    [
        GraphQLError(
            "Subscriptions are served over WebSocket (the graphql-transport-ws protocol) "
            "at this path; HTTP serves queries and mutations.",
            extensions={"code": "BAD_REQUEST"},
        )
    ],
    http_status=400,
)

if TYPE_CHECKING:
    from features_gql.edge import EdgeSync
    from features_gql.feed import ChangeFeed
    from features_gql.metrics import Metrics

GRAPHQL = "graphql"
GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_GRAPHQL_RESPONSE_HEADERS = {"Content-Type": GRAPHQL_RESPONSE}
_JSON_HEADERS = {"Content-Type": JSON}

ACCEPT_KEY = web.ResponseKey("features_gql.accept", str)
CONTEXT_KEY = web.RequestKey("features_gql.context", Context)
BODY_KEY = web.RequestKey("features_gql.graphql_request", GraphQLBody)


@functools.lru_cache(maxsize=64)
def wants_graphql_response(accept: str) -> bool:
    """Whether the client prefers ``application/graphql-response+json`` (GraphQL over HTTP).

    Clients that send no Accept header, or accept ``application/json`` first, get
    the legacy ``application/json`` behaviour: HTTP 200 for every well-formed request.
    """
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        media = pieces[0].lower()
        if media not in (GRAPHQL_RESPONSE, JSON):
            continue
        quality = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        key = (-quality, position, media)
        if quality > 0 and (best is None or key < best):
            best = key
    return best is not None and best[2] == GRAPHQL_RESPONSE


#: ``Outcome`` built in C, for the fast path's answers (a named tuple's own ``__new__``
#: is a Python function).
_outcome = cast(
    "Callable[[tuple[str | None, str, list[str], bool, str]], Outcome]",
    partial(tuple.__new__, Outcome),
)


def error_codes(errors: Iterable[GraphQLError]) -> list[str]:
    """The ``extensions.code`` of each error, for the request log and metrics."""
    return [str((error.extensions or {}).get("code", "UNKNOWN")) for error in errors]


class FeaturesGraphQLView(GraphQLView[Context, None]):
    """GraphQL over HTTP: authenticate, read the body once, ask the gate, then answer
    through the compiled fast path or Strawberry's general path.

    WebSocket upgrades speak ``graphql-transport-ws`` only, for subscriptions, through
    the same authentication, gate, metrics and request log (``http/subscriptions.py``).
    """

    schema: FeaturesSchema
    websocket_adapter_class = TextWebSocketAdapter
    graphql_transport_ws_handler_class = SubscriptionHandler

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        schema: FeaturesSchema,
        pipeline: Pipeline | None = None,
        fast_path: bool = True,
        feed: ChangeFeed | None = None,
        metrics: Metrics | None = None,
        sync: EdgeSync | None = None,
        graphiql: GraphiQLPage | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            schema=schema,
            # GraphiQL is served from the service's own files (http/graphiql.py), never
            # Strawberry's page, which loads it from a CDN.
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,) if feed is not None else (),
            connection_init_wait_timeout=timedelta(seconds=CONNECTION_INIT_TIMEOUT),
            **kwargs,
        )
        self.api = api
        self.graphiql = graphiql
        self.feed = feed
        self.metrics = metrics
        self.sync = sync
        self.pipeline = pipeline or Pipeline(metrics=metrics)
        self.auth = self.pipeline.auth
        self._anonymous_may_ask = bool(self.auth.anonymous_principal.scopes)
        self.gate = schema.gate
        self._parsed_texts = schema.gate.cache.texts
        self.fast_path = FastPath(schema.graphql_schema, schema.extensions) if fast_path else None
        #: Changes encoded for subscribers, shared between them (http/subscriptions.py).
        self.encoded_events = EncodedEvents()
        #: Seconds a subscriber's socket may take to drain before it is closed as too slow.
        self.send_timeout = SEND_TIMEOUT
        #: Seconds between two pings of a subscription connection, and how long its client
        #: has to answer one (http/subscriptions.py).
        self.keepalive_interval = KEEPALIVE_INTERVAL
        self.keepalive_timeout = KEEPALIVE_TIMEOUT

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        accept = headers.get("Accept", "")
        upgrade = headers.get("Upgrade")
        if upgrade is not None and upgrade.lower() == "websocket":
            return await self._websocket(request)
        method = request.method
        if (
            method == "GET"
            and "query" not in request.query
            and ("text/html" in accept or "*/*" in accept)
        ):
            if self.graphiql is not None:
                return await self.graphiql.page(request)  # no data in it: no token needed
            if "text/html" in accept:
                return error_response(
                    404,
                    f"Not found: {request.path} (GraphiQL is switched off here; GraphQL "
                    "requests are POSTs, or GETs with a query parameter).",
                    "NOT_FOUND",
                )
        try:
            scope = request[SCOPE_KEY]
        except KeyError:
            scope = self.pipeline.scope(request)
        # An edge forwards writes with the caller's own credentials; set for every request,
        # since one connection's requests share one task (and so its context).
        request_credentials.set(scope.authorization)
        principal = self._enter(scope)
        if type(principal) is not Principal:
            return cast(web.Response, principal)
        claim(request, principal.name)
        body = graphql_request_now(request, method) or await read_graphql_request(request, method)
        if isinstance(body, BodyError):
            return self._http_error(request, body.status, body.code, body.message, allow=body.allow)
        query = body.query
        if not query:
            return self._http_error(
                request, 400, "BAD_REQUEST", "No GraphQL query found in the request."
            )
        if query not in self._parsed_texts:
            # A text never parsed here (or no longer cached) costs its client parsing time.
            limited = self.pipeline.may_parse(scope)
            if limited is not None:
                scope.outcome = Outcome(None, "rejected", [RATE_LIMITED])
                return too_many_requests(limited)
            # CPU time, not wall time: a busy machine must not make a client pay more.
            started = time.thread_time()
            decision = self.gate.admit(
                query, body.operation_name, body.variables, principal, method=method
            )
            self.pipeline.parsed(scope, time.thread_time() - started)
        else:
            decision = self.gate.admit(
                query, body.operation_name, body.variables, principal, method=method
            )
        context = Context(
            self.api,
            scope.request_id,
            principal,
            None if isinstance(decision, Refused) else decision,
            sync=self.sync,
        )
        if isinstance(decision, Refused):
            return self._refuse(request, decision, principal)
        if decision.operation.operation is OperationType.SUBSCRIPTION:
            return self._refuse(request, _SUBSCRIPTION_OVER_HTTP, principal)
        context.operation_name = decision.operation_name
        if (
            self.fast_path is not None
            and method == "POST"
            and not body.extensions
            and "multipart" not in accept
            and "event-stream" not in accept
        ):
            plan = self.fast_path.plan(decision)
            if plan is not None:
                answer = await self.fast_path.answer(plan, body.variables or {}, context)
                if answer is not None and not answer.errors:
                    # Written as create_response writes it, with less in between.
                    scope.outcome = _outcome((plan.operation_name, "ok", [], False, GRAPHQL))
                    media = (
                        _GRAPHQL_RESPONSE_HEADERS
                        if wants_graphql_response(accept)
                        else _JSON_HEADERS
                    )
                    return web.Response(body=orjson.dumps({"data": answer.data}), headers=media)
                if answer is not None:
                    return self._fast_errors(request, plan.operation_name, answer, accept)
        # Strawberry's general path takes both from the request (get_context,
        # parse_http_body); the fast path needs neither.
        request[CONTEXT_KEY] = context
        request[BODY_KEY] = body
        try:
            async with asyncio.timeout(scope.remaining()):
                return await self._run_strawberry(request)
        except TimeoutError:
            # Every store call has its own deadline; this bounds a request that makes many.
            return self._http_error(
                request,
                503,
                "REQUEST_TIMEOUT",
                f"The request was not answered within {self.pipeline.request_deadline:g} s; "
                "it may have been partly applied.",
            )

    def _enter(self, scope: RequestScope) -> Principal | web.Response:
        """The caller, authenticated once through the pipeline; else the refusal."""
        if scope.authorization is None and scope.counted and self._anonymous_may_ask:
            # No token, the address already charged by the observer: what the pipeline
            # would answer, without its calls (most flag checks of an open service).
            principal = scope.principal = self.auth.anonymous_principal
            scope.policy = self.auth
            return principal
        try:
            return self.pipeline.enter(scope, None, some_scope=True)
        except Unauthenticated as exc:
            scope.outcome = Outcome(None, "rejected", [Unauthenticated.code])
            return unauthenticated(exc)
        except RateLimited as exc:
            scope.outcome = Outcome(None, "rejected", [RATE_LIMITED])
            return too_many_requests(exc)

    def _fast_errors(
        self, request: web.Request, operation_name: str | None, answer: Answer, accept: str
    ) -> web.Response:
        """The fast path's answer with errors, written by :meth:`create_response`."""
        codes = error_codes(answer.errors)
        request[SCOPE_KEY].outcome = Outcome(operation_name, "error", codes)
        payload = {"data": answer.data, "errors": [error.formatted for error in answer.errors]}
        response = web.Response()
        response[ACCEPT_KEY] = accept
        return self.create_response(payload, response)  # type: ignore[arg-type]

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """A subscription connection. A token in the upgrade request's header is checked
        here, before the upgrade; otherwise the handler takes it from connection_init."""
        if self.feed is None:
            return self._http_error(
                request, 400, "BAD_REQUEST", "WebSocket subscriptions are not served here."
            )
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            # A page on another site must not open a connection with the user's cookies or
            # network position (cross-site WebSocket hijacking); clients that are not
            # browsers send no Origin.
            return self._http_error(
                request, 403, "FORBIDDEN", "WebSocket connections from other origins are refused."
            )
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        if GRAPHQL_TRANSPORT_WS_PROTOCOL not in (p.strip() for p in offered.split(",")):
            return self._http_error(
                request,
                400,
                "BAD_REQUEST",
                f"Subscriptions speak the {GRAPHQL_TRANSPORT_WS_PROTOCOL} protocol only.",
            )
        scope = self.pipeline.scope(request)
        if scope.authorization is not None:
            entered = self._enter(scope)
            if type(entered) is not Principal:
                return cast(web.Response, entered)
            try:
                self.auth.require(entered, "read")
            except Unauthenticated as exc:
                scope.outcome = Outcome(None, "rejected", [Unauthenticated.code])
                return unauthenticated(exc)
            claim(request, entered.name)
            request[PRINCIPAL_KEY] = entered
        return await self._run_strawberry(request)

    async def create_websocket_response(
        self, request: web.Request, subprotocol: str | None
    ) -> web.WebSocketResponse:
        # No WebSocket-level heartbeat: the subscription handler pings in the protocol
        # itself, so that a client that stops answering is closed with the revision to
        # resume after rather than dropped without a word. No per-message compression:
        # its zlib state costs hundreds of KB per connection, more than a subscriber may
        # hold, for messages of a few dozen bytes.
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else [],
            compress=False,
        )
        # Prepared here, before the middleware sees it: it names the server itself.
        ws.headers["Server"] = SERVER
        await ws.prepare(request)
        transport = request.transport
        if transport is not None:
            # What may sit unsent before a subscriber waits for its socket to drain: in
            # this process, and in the kernel (whose buffer would otherwise grow to MBs).
            transport.set_write_buffer_limits(high=OUTBOX_BYTES)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, OUTBOX_BYTES)
        return ws

    def _refuse(self, request: web.Request, refusal: Refused, principal: Principal) -> web.Response:
        codes = error_codes(refusal.errors)
        if principal.anonymous and "FORBIDDEN" in codes:
            # A missing token where one is needed is unauthenticated, not forbidden.
            request[SCOPE_KEY].outcome = Outcome(
                refusal.operation_name, "rejected", [Unauthenticated.code]
            )
            scope = (refusal.errors[0].extensions or {}).get("scope", "write")
            return unauthenticated(
                Unauthenticated(
                    f"This needs the {scope!r} scope: send Authorization: Bearer <token>."
                )
            )
        scope = request[SCOPE_KEY]
        translated = [translate(error, scope.request_id) for error in refusal.errors]
        codes = error_codes(translated)
        errors = [error.formatted for error in translated]
        scope.outcome = Outcome(
            refusal.operation_name, "error" if refusal.has_data else "rejected", codes
        )
        payload: dict[str, Any] = {"errors": errors}
        if refusal.has_data:
            payload = {"data": refusal.data, "errors": errors}
        response = web.Response()
        response[ACCEPT_KEY] = request.headers.get("Accept", "")
        self.create_response(payload, response)  # type: ignore[arg-type]
        if refusal.http_status is not None:
            response.set_status(refusal.http_status)
        if refusal.allow is not None:
            response.headers["Allow"] = refusal.allow
        return response

    def _http_error(
        self,
        request: web.Request,
        status: int,
        code: str,
        message: str,
        *,
        allow: str | None = None,
    ) -> web.Response:
        self.pipeline.scope(request).outcome = Outcome(None, "rejected", [code])
        media = (
            GRAPHQL_RESPONSE if wants_graphql_response(request.headers.get("Accept", "")) else JSON
        )
        return error_response(
            status,
            message,
            code,
            content_type=media,
            headers={"Allow": allow} if allow else None,
        )

    async def _run_strawberry(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.run(request=request)
        except HTTPException as exc:
            status = exc.status_code
            code = {415: "UNSUPPORTED_MEDIA_TYPE", 404: "NOT_FOUND"}.get(status, "BAD_REQUEST")
            return self._http_error(
                request, status, code, exc.reason, allow="GET, POST" if status == 405 else None
            )

    async def get_context(self, request: web.Request, response: Any) -> Context:
        context = request.get(CONTEXT_KEY)
        if context is None:  # the IDE page, or a WebSocket (each operation gets its own)
            context = Context(
                api=self.api,
                request_id=self.pipeline.scope(request).request_id,
                feed=self.feed,
                sync=self.sync,
            )
        return context

    async def parse_http_body(self, request: Any) -> GraphQLRequestData:
        # The view read and checked the body already: Strawberry gets it as it was parsed.
        body: GraphQLBody = request.request[BODY_KEY]
        return GraphQLRequestData(
            query=body.query,
            variables=body.variables,
            operation_name=body.operation_name,
            extensions=body.extensions,
        )

    async def process_result(
        self, request: web.Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # Errors raised before execution bypass the schema extension.
            rid = self.pipeline.scope(request).request_id
            result.errors = [translate(error, rid) for error in result.errors]
        response = await super().process_result(request, result)
        # A request error (variables) stops before execution: the GraphQL spec says such a
        # response has no `data` entry at all.
        rejected = bool(
            result.data is None and result.errors and all(e.path is None for e in result.errors)
        )
        if rejected:
            response.pop("data", None)
        context = request.get(CONTEXT_KEY)
        codes = error_codes(result.errors or ())
        admitted = context.admitted if context is not None else None
        self.pipeline.scope(request).outcome = Outcome(
            operation=context.operation_name if context is not None else None,
            outcome="rejected" if rejected else "error" if codes else "ok",
            codes=codes,
            write=admitted is not None and admitted.operation.operation.value != "query",
        )
        return response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: web.Response,
    ) -> web.Response:
        sub_response.body = orjson.dumps(response_data)
        # The header is set as a string: aiohttp's content_type setter parses and rebuilds.
        if wants_graphql_response(sub_response.get(ACCEPT_KEY, "")):
            sub_response.headers["Content-Type"] = GRAPHQL_RESPONSE
            if isinstance(response_data, dict) and "data" not in response_data:
                sub_response.set_status(400)
        else:
            sub_response.headers["Content-Type"] = JSON
        return sub_response

    async def get_sub_response(self, request: web.Request) -> web.Response:
        response = web.Response()
        # Strawberry hands create_response only the sub-response: carry Accept on it.
        response[ACCEPT_KEY] = request.headers.get("Accept", "")
        return response
