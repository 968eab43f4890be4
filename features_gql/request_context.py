"""Per-request correlation that follows a request into every store operation it causes."""

from __future__ import annotations

from contextvars import ContextVar

#: Set by the driving adapter (HTTP middleware) for the duration of one request.
request_id: ContextVar[str | None] = ContextVar("features_gql_request_id", default=None)
