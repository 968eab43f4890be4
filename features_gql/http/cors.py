"""CORS, so that browser frontends on the configured origins can call the API.

A browser asks first (a preflight ``OPTIONS`` with ``Access-Control-Request-Method``)
before it sends a request with ``Authorization`` or ``Content-Type: application/json``
from another origin, and lets the page read an answer only if it names the page's
origin. Allowed origins get both; any other origin gets no CORS header at all, and its
preflight a 403, so the browser keeps its page from calling the API.

Requests without an ``Origin`` header (servers, command-line tools, same-origin pages
that do not send one) pass through untouched: one header lookup is the whole cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from features_gql.http.responses import SERVER, error_response

#: Methods a frontend may use (GraphQL over HTTP: GET for queries, POST for anything).
ALLOWED_METHODS = "GET, POST"
#: Request headers a frontend may send beyond the CORS-safelisted ones.
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
#: Response headers a frontend may read beyond the CORS-safelisted ones.
EXPOSED_HEADERS = "X-Request-ID"
#: Seconds a browser may cache a preflight answer (browsers cap it at 2 h or less).
MAX_AGE = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_middleware(origins: Collection[str]) -> Middleware:
    """A middleware answering preflights and labelling answers for ``origins``: exact
    ``scheme://host[:port]`` strings in lower case, or ``"*"`` for any origin."""
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def allows(origin: str) -> bool:
        return any_origin or origin.lower() in allowed

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allows(origin):
                return error_response(
                    403,
                    "This origin may not call the API from a browser; the service's "
                    "cors_origins setting lists the origins that may.",
                    "ORIGIN_NOT_ALLOWED",
                )
            response = web.Response(status=204)
            response.headers.update(
                {
                    # Answered before request_context, which names the server elsewhere.
                    "Server": SERVER,
                    "Access-Control-Allow-Origin": "*" if any_origin else origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE,
                    "Vary": "Origin",
                }
            )
            return response
        label = origin if allows(origin) else None
        try:
            answer = await handler(request)
        except web.HTTPException as exc:
            _label(exc.headers, label, any_origin)
            raise
        _label(answer.headers, label, any_origin)
        return answer

    return cors


def _label(headers: CIMultiDict[str], origin: str | None, any_origin: bool) -> None:
    """Name the allowed ``origin`` (None: not allowed) on an answer to a request from it."""
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if not any_origin:
        # The answer depends on Origin: a shared cache must not hand it to another origin.
        vary = headers.get("Vary")
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
