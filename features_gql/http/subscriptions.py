"""GraphQL subscriptions over WebSocket (the ``graphql-transport-ws`` protocol).

The WebSocket way in passes the same checks as HTTP:

- **authentication**: the token comes from the upgrade request's ``Authorization``
  header (an unknown one is refused with HTTP 401 before the upgrade) or, since browsers
  cannot set headers on a WebSocket, from the ``connection_init`` payload as
  ``{"Authorization": "Bearer <token>"}``. A connection whose caller may not read is
  closed with 4403 before anything runs;
- **the gate**: every operation is admitted by the same :class:`Gate` as an HTTP request
  (parsed and validated once, depth, cost, and the scope: a subscription needs ``read``).
  Only subscriptions are served here; queries and mutations go over HTTP, so nothing
  can write through this path;
- **metrics and the request log**: each subscription is counted by the request metrics
  when it ends (operation, outcome, error codes) and logged with its own request id.

A subscriber that falls too far behind is disconnected with close code
:data:`TOO_SLOW_CLOSE_CODE` and the reason ``subscriber too slow; resume with after=N``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web
from graphql import ExecutionResult, GraphQLError, OperationType, subscribe
from strawberry.aiohttp.views import AiohttpWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
)

from features_gql.auth import AuthPolicy, Principal, Unauthenticated
from features_gql.feed import SubscriberTooSlow
from features_gql.graphql.admission import Refused
from features_gql.graphql.context import Context
from features_gql.graphql.errors import translate
from features_gql.request_context import request_id

if TYPE_CHECKING:
    from features_gql.http.view import FeaturesGraphQLView

log = logging.getLogger("features_gql.http")
request_log = logging.getLogger("features_gql.request")

#: Close code for a subscriber dropped for falling behind (graphql-ws leaves 4000-4999
#: to applications and uses a few of them; this one is not among those).
TOO_SLOW_CLOSE_CODE = 4410
#: Close code for a connection whose caller may not read (graphql-ws: Forbidden).
FORBIDDEN_CLOSE_CODE = 4403

PRINCIPAL_KEY = web.RequestKey("features_gql.ws_principal", Principal)


class TextWebSocketAdapter(AiohttpWebSocketAdapter):
    """graphql-transport-ws speaks in text frames: the view's JSON encoder gives bytes."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_str(orjson.dumps(message).decode())
        except (RuntimeError, ConnectionResetError) as exc:
            raise WebSocketDisconnected from exc


def _credentials(payload: Mapping[str, object]) -> str | None:
    for key in ("Authorization", "authorization"):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


class SubscriptionHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with features-gql's checks per operation."""

    view: FeaturesGraphQLView

    @property
    def request(self) -> web.Request:
        return cast(TextWebSocketAdapter, self.websocket).request

    @property
    def auth(self) -> AuthPolicy:
        return self.view.auth

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload") or {}
        if (
            not self.connection_init_received
            and isinstance(payload, dict)
            and PRINCIPAL_KEY not in self.request
        ):
            try:
                principal = self.auth.authenticate(_credentials(payload))
                self.auth.require(principal, "read")
            except Unauthenticated as exc:
                self._refused(str(exc))
                await self.websocket.close(code=FORBIDDEN_CLOSE_CODE, reason=f"Forbidden: {exc}")
                return
            self.request[PRINCIPAL_KEY] = principal
        await super().handle_connection_init(message)

    def _refused(self, reason: str) -> None:
        log.warning(
            "subscription connection refused: %s",
            reason,
            extra={"fields": {"remote": self.request.remote}},
        )
        if self.view.metrics is not None:
            self.view.metrics.errors.labels(Unauthenticated.code).inc()

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        started = time.perf_counter()
        connection_id = request_id.get() or "-"
        rid = f"{connection_id}.{operation.id[:32]}"
        principal = self.request.get(PRINCIPAL_KEY) or self.auth.anonymous_principal
        outcome, codes, events, name = "ok", list[str](), 0, operation.operation_name
        try:
            decision = self.view.gate.admit(
                operation.query, operation.operation_name, operation.variables, principal
            )
            if isinstance(decision, Refused):
                errors = [translate(error, rid) for error in decision.errors]
                outcome, codes = "rejected", _codes(errors)
                await operation.send_initial_errors(errors)
                return
            name = decision.operation_name
            if decision.operation.operation != OperationType.SUBSCRIPTION:
                error = GraphQLError(
                    "Only subscriptions are served over WebSocket; send queries and "
                    "mutations with HTTP POST.",
                    extensions={"code": "BAD_REQUEST"},
                )
                outcome, codes = "rejected", ["BAD_REQUEST"]
                await operation.send_initial_errors([error])
                return
            context = Context(
                api=self.view.api,
                request_id=rid,
                principal=principal,
                admitted=decision,
                feed=self.view.feed,
                sync=self.view.sync,
            )
            context.operation_name = name
            source = subscribe(
                self.view.schema.graphql_schema,
                decision.document,
                context_value=context,
                variable_values=operation.variables,
                operation_name=name,
            )
            if inspect.isawaitable(source):
                source = await source
            if isinstance(source, ExecutionResult):
                errors = [translate(error, rid) for error in source.errors or ()]
                outcome, codes = "rejected", _codes(errors)
                await operation.send_initial_errors(errors)
                return
            stream = source
            try:
                async for result in stream:
                    if result.errors:
                        result.errors = [translate(error, rid) for error in result.errors]
                        codes += _codes(result.errors)
                        outcome = "error"
                    await operation.send_next(result)  # type: ignore[arg-type]
                    events += 1
                    if self.view.metrics is not None and self.view.metrics.subscription_events:
                        self.view.metrics.subscription_events.inc()
            except SubscriberTooSlow as exc:
                outcome, codes = "error", [*codes, exc.code]
                await self.websocket.close(code=TOO_SLOW_CLOSE_CODE, reason=str(exc))
                self.operations.pop(operation.id, None)
                return
            except Exception as exc:
                # A typed end (the store failed while reading the backlog, the log was
                # trimmed past `after`, a bad argument) or a bug, which translate() logs
                # and masks: the subscription ends with that error.
                error = translate(
                    GraphQLError(str(exc), path=["featureChanges"], original_error=exc), rid
                )
                outcome, codes = "error", [*codes, *_codes([error])]
                await operation.send_initial_errors([error])
                return
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except WebSocketDisconnected:
            outcome = "disconnected" if outcome == "ok" else outcome
        finally:
            seconds = time.perf_counter() - started
            if self.view.metrics is not None:
                self.view.metrics.observe_request(name, outcome, seconds, codes)
            level = logging.INFO if outcome not in ("ok", "disconnected") else logging.DEBUG
            if request_log.isEnabledFor(level):
                request_log.log(
                    level,
                    "graphql subscription",
                    extra={
                        "fields": {
                            "request_id": rid,
                            "operation": name or "anonymous",
                            "duration_ms": round(seconds * 1000, 3),
                            "outcome": outcome,
                            "errors": ",".join(sorted(set(codes))) or None,
                            "events": events,
                            "actor": principal.name,
                        }
                    },
                )


def _codes(errors: Any) -> list[str]:
    return [str((error.extensions or {}).get("code", "UNKNOWN")) for error in errors]
