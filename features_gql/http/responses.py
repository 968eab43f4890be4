"""What every HTTP answer of the service shares: the ``Server`` header and the JSON error.

Every error, whether GraphQL, routing (404, 405), body size (413) or connection level
(400 for a malformed request, 408, 503), has one shape that clients parse the same way::

    {"errors": [{"message": "...", "extensions": {"code": "PAYLOAD_TOO_LARGE"}}]}
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

JSON = "application/json"

#: The ``Server`` header of every response: the software, with no version for
#: scanners to match against vulnerability lists.
SERVER = "features-gql"

#: ``extensions.code`` of HTTP errors that have no more specific code.
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    417: "EXPECTATION_FAILED",
    429: "TOO_MANY_REQUESTS",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}


def code_for(status: int) -> str:
    if status in HTTP_CODES:
        return HTTP_CODES[status]
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "HTTP_ERROR" if status < 500 else "INTERNAL_SERVER_ERROR"


def error_body(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


def encode(body: Any) -> bytes:
    """Compact JSON, spaced as GraphQL responses are. ``json`` rather than orjson: it
    escapes everything outside ASCII, including the lone surrogates that undecodable
    header bytes become, so a message quoting a client's input can always be encoded."""
    return json.dumps(body, separators=(",", ":")).encode()


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    content_type: str = JSON,
    **extensions: Any,
) -> web.Response:
    """``{"errors": [{"message", "extensions": {"code", ...}}]}`` with ``status``.

    It names the server itself: some are answered before any middleware (a refused CORS
    preflight, a malformed request)."""
    return web.Response(
        body=encode(error_body(message, code or code_for(status), **extensions)),
        status=status,
        content_type=content_type,
        headers={"Server": SERVER} if headers is None else {"Server": SERVER, **headers},
    )


def raw_error_response(status: int, message: str, *extra_headers: str) -> bytes:
    """A whole HTTP/1.1 error response, for answers written before any request is read
    (a refused connection) or when the request never completed (a header timeout)."""
    body = encode(error_body(message, code_for(status)))
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Server: {SERVER}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
