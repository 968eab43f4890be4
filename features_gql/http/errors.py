"""HTTP-level error answers: the same JSON shape as GraphQL errors, with a code."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

JSON = "application/json"


def error_body(code: str, message: str, **extensions: object) -> bytes:
    return orjson.dumps(
        {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON,
    **extensions: object,
) -> web.Response:
    """``{"errors": [{"message", "extensions": {"code"}}]}`` with ``status``."""
    return web.Response(
        body=error_body(code, message, **extensions),
        status=status,
        content_type=content_type,
        headers=headers,
    )
