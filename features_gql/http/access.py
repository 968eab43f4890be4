"""Authentication at the HTTP edge: the same answers for every way in."""

from __future__ import annotations

import asyncio
import logging
import weakref

from aiohttp import web

from features_gql.auth import AuthPolicy, Unauthenticated
from features_gql.http.responses import error_response
from features_gql.http.throttled_log import ThrottledLog

log = logging.getLogger("features_gql.http")

_THROTTLED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThrottledLog] = (
    weakref.WeakKeyDictionary()
)


def _refusals() -> ThrottledLog:
    loop = asyncio.get_running_loop()
    throttled = _THROTTLED.get(loop)
    if throttled is None:
        throttled = _THROTTLED[loop] = ThrottledLog(log, loop)
    return throttled


def unauthenticated(exc: Unauthenticated, realm: str = "features-gql") -> web.Response:
    """HTTP 401 with a Bearer challenge: the answer of every way in to a missing or
    unknown token where one is needed."""
    return error_response(
        401,
        str(exc),
        Unauthenticated.code,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )


def check_scope(
    auth: AuthPolicy, request: web.Request, scope: str, *, realm: str
) -> web.Response | None:
    """None when the request's token has ``scope``; else the 401 or 403 to answer."""
    try:
        principal = auth.authenticate(request.headers.get("Authorization"))
        auth.require(principal, scope)
    except Unauthenticated as exc:
        # A client can send refused requests as fast as it likes: one line per interval.
        _refusals().event(
            "unauthenticated",
            "request refused: missing or unknown token",
            path=request.path,
            remote=request.remote,
        )
        return unauthenticated(exc, realm)
    if not principal.can(scope):
        return error_response(
            403, f"The token {principal.name!r} lacks the {scope!r} scope.", "FORBIDDEN"
        )
    return None
