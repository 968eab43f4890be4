"""Authentication at the HTTP edge: the same answers for every way in."""

from __future__ import annotations

import logging

from aiohttp import web

from features_gql.auth import AuthPolicy, Unauthenticated
from features_gql.http.responses import error_response

log = logging.getLogger("features_gql.http")


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
        log.warning(
            "request refused: missing or unknown token",
            extra={"fields": {"path": request.path, "remote": request.remote}},
        )
        return unauthenticated(exc, realm)
    if not principal.can(scope):
        return error_response(
            403, f"The token {principal.name!r} lacks the {scope!r} scope.", "FORBIDDEN"
        )
    return None
