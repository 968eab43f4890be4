"""Turns domain errors into GraphQL errors with codes, and masks unexpected ones."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from features_gql.errors import (
    ChangesTrimmed,
    InvalidInput,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnsupported,
    UpstreamRefused,
    UpstreamUnavailable,
)

log = logging.getLogger("features_gql.graphql")

BAD_USER_INPUT = "BAD_USER_INPUT"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL = "INTERNAL_SERVER_ERROR"

_STORE_MESSAGES = {
    StoreTimeout: "The feature store did not answer in time; try again.",
    StoreConflict: "The write conflicted with another write in flight and was not applied; retry.",
    StoreUnsupported: "The feature store of this service does not offer this field.",
    UpstreamUnavailable: "The upstream service cannot be reached: this edge answers reads from "
    "its copy, but cannot write now; nothing was applied. Retry later.",
}
_STORE_DEFAULT = "The feature store is unavailable; try again."


def _copy(error: GraphQLError, message: str, extensions: dict[str, object]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def translate(
    error: GraphQLError, request_id: str | None, logged: set[int] | None = None
) -> GraphQLError:
    """The error a client sees: a code in ``extensions`` and nothing internal.

    ``logged`` collects the store errors already logged for this response: the fields of
    one failed DataLoader batch share one exception, which is logged once.
    """
    original = error.original_error
    if isinstance(original, InvalidInput):
        return _copy(
            error,
            original.message,
            {"code": BAD_USER_INPUT, "field": original.field, "rule": original.rule},
        )
    if isinstance(original, ChangesTrimmed):
        # An answer, not a failure: the reader resyncs from a snapshot.
        return _copy(
            error,
            str(original),
            {"code": original.code, "firstRetained": original.first_retained},
        )
    if isinstance(original, UpstreamRefused):
        # The upstream's own answer to a forwarded write (a token it refused...).
        return _copy(error, original.message, {**original.extensions, "code": original.code})
    if isinstance(original, StoreError):
        if logged is None or id(original) not in logged:
            log.warning(
                "store error answered as %s: %s",
                original.code,
                original,
                extra={"fields": {"request_id": request_id, "injected": original.injected or None}},
            )
        if logged is not None:
            logged.add(id(original))
        extensions: dict[str, object] = {"code": original.code, "requestId": request_id}
        if original.injected:
            extensions["injected"] = True
        if getattr(original, "maybe_applied", False):
            # The write may have landed after the deadline; retrying is safe (idempotent).
            extensions["maybeApplied"] = True
        message = _STORE_MESSAGES.get(type(original), _STORE_DEFAULT)
        if "maybeApplied" in extensions:
            message = (
                "The feature store did not answer in time; the write may still have been "
                "applied. Writes are idempotent: retrying it is safe."
            )
            if isinstance(original, UpstreamUnavailable):
                message = (
                    "The upstream service did not answer; the write may still have been "
                    "applied there. Writes are idempotent: retrying it is safe."
                )
        return _copy(error, message, extensions)
    if original is None or isinstance(original, GraphQLError):
        if error.extensions and "code" in error.extensions:
            return error
        if error.message.startswith("Syntax Error"):
            code = PARSE_FAILED
        elif error.path is None:
            code = VALIDATION_FAILED
        else:
            code = BAD_USER_INPUT
        return _copy(error, error.message, {**(error.extensions or {}), "code": code})
    log.error(
        "unexpected error in GraphQL execution",
        exc_info=original,
        extra={"fields": {"request_id": request_id}},
    )
    return _copy(
        error,
        f"Internal error; quote request id {request_id} when reporting it.",
        {"code": INTERNAL, "requestId": request_id},
    )


class ErrorCodes(SchemaExtension):
    """Runs after each operation and rewrites its errors with :func:`translate`."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        if hasattr(context, "operation_name"):
            context.operation_name = self.execution_context.operation_name
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        request_id = getattr(context, "request_id", None)
        logged: set[int] = set()
        result.errors = [translate(error, request_id, logged) for error in result.errors]
