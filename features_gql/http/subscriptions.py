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

**Memory that stays flat.** Each change is encoded once for every subscription of the
same shape (the same document, and the same values of the variables its selection uses):
the result's bytes are kept in :class:`EncodedEvents`, a cache bounded in bytes, and each
subscriber's message is those bytes behind its own operation id. What a subscriber holds
of its own is bounded too: the socket's write buffer is held to :data:`OUTBOX_BYTES`, and
a subscriber reads the change feed only as fast as its socket drains (the feed itself
keeps one shared window of recent changes, see :mod:`features_gql.feed`). A subscriber
whose socket does not drain within :data:`SEND_TIMEOUT` seconds (a stalled or too slow
client) is closed with close code :data:`TOO_SLOW_CLOSE_CODE` and the reason
``subscriber too slow; resume with after=N``: N is the last change written to its socket,
so subscribing again with ``after: N`` misses nothing. So is one that does not answer
the protocol's ``ping`` (sent every :data:`KEEPALIVE_INTERVAL` seconds) within
:data:`KEEPALIVE_TIMEOUT`: gone, or not reading while it waits for its turn to catch up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Hashable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import WSMsgType, web
from graphql import (
    DocumentNode,
    ExecutionResult,
    Executor,
    FieldNode,
    GraphQLError,
    Node,
    OperationDefinitionNode,
    OperationType,
    VariableDefinitionNode,
    VariableNode,
    create_source_event_stream,
    execute_subscription_event,
)
from strawberry.aiohttp.views import AiohttpWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    PongMessage,
)

from features_gql.auth import AuthPolicy, Principal, Unauthenticated
from features_gql.feed import SubscriberTooSlow
from features_gql.graphql.admission import Refused
from features_gql.graphql.context import Context
from features_gql.graphql.errors import translate
from features_gql.http.connections import claim, init_timed_out, unproven
from features_gql.http.pipeline import RATE_LIMITED, RateLimited, throttled_log
from features_gql.rate_limits import retry_after

if TYPE_CHECKING:
    from features_gql.http.view import FeaturesGraphQLView

log = logging.getLogger("features_gql.http")
request_log = logging.getLogger("features_gql.request")

#: Close code for a subscriber dropped for falling behind (graphql-ws leaves 4000-4999
#: to applications and uses a few of them; this one is not among those).
TOO_SLOW_CLOSE_CODE = 4410
#: Close code for a connection whose caller may not read (graphql-ws: Forbidden).
FORBIDDEN_CLOSE_CODE = 4403
#: Close code for a connection whose token is over its request rate (4000 + HTTP's 429).
RATE_LIMITED_CLOSE_CODE = 4429

PRINCIPAL_KEY = web.RequestKey("features_gql.ws_principal", Principal)

#: Bytes a subscriber's socket may hold unsent before the subscriber waits for it to
#: drain, in the process and again in the kernel: with the page it reads from the change
#: log, all a subscriber holds. Small on purpose: what a stalled client's buffers absorb
#: is work done for nothing (a hundred clients that stop reading cost the service the
#: encoding and sending of what fills their buffers), and 16 KiB still carries thousands
#: of changes a second over a 100 ms round trip.
OUTBOX_BYTES = 16 * 1024
#: Seconds a subscriber's socket may take to drain before the subscriber is closed as
#: too slow (it resumes with the revision in the close reason). Shorter than the
#: WebSocket heartbeat's limit (a ping every 20 s, 10 s for the pong), which would end a
#: stalled connection without saying where to resume.
SEND_TIMEOUT = 10.0
#: Seconds between two ``ping`` messages on a subscription connection, and how long the
#: client has to answer one with ``pong`` (graphql-transport-ws asks it to "as soon as
#: possible"). A client that does not answer in time — gone, or not reading — is closed
#: with :data:`TOO_SLOW_CLOSE_CODE` and the revision to resume after.
KEEPALIVE_INTERVAL = 20.0
KEEPALIVE_TIMEOUT = 10.0
#: Seconds a close for not keeping up may take (the client's answer included) before the
#: connection is closed under it, and how long what is queued for the client (the close
#: frame last) may wait for it to read before the connection is dropped.
CLOSE_TIMEOUT = 5.0
CLOSE_LINGER = 30.0
#: Bytes of encoded changes shared between subscribers (the most recent are kept).
ENCODED_BYTES = 4 * 1024 * 1024
#: Seconds a client has to send ``connection_init`` after the upgrade, or be closed with
#: 4408. The standalone service gives connections upgraded without a token its
#: connection guard's deadline instead (``INIT_TIMEOUTS`` header timeouts, the same by
#: default): until then they hold a slot without having shown anything.
CONNECTION_INIT_TIMEOUT = 3.0


#: What one cached payload costs beyond its bytes: its key and its place in the cache.
_ENTRY_OVERHEAD = 200


class EncodedEvents:
    """The encoded ``next`` payloads of recent changes, shared by every subscription of
    the same shape: a change sent to a thousand subscribers is encoded once. Bounded in
    bytes (each entry counted with its key); the oldest go first."""

    def __init__(self, limit: int = ENCODED_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._payloads: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes | None:
        payload = self._payloads.get(key)
        if payload is None:
            self.misses += 1
        else:
            self.hits += 1
        return payload

    def put(self, key: Hashable, payload: bytes) -> bytes:
        """Keep ``payload`` for ``key``; returns the copy kept. The copy matters: orjson
        hands back its whole output buffer (4 KB for a 50-byte document), so keeping
        what it returns would cost eighty times what the bound counts."""
        kept = bytes(memoryview(payload))
        cost = len(kept) + _ENTRY_OVERHEAD
        if cost > self.limit or key in self._payloads:
            return kept
        self._payloads[key] = kept
        self.size += cost
        while self.size > self.limit:
            _, evicted = self._payloads.popitem(last=False)
            self.size -= len(evicted) + _ENTRY_OVERHEAD
        return kept

    def __len__(self) -> int:
        return len(self._payloads)


def _uses(node: Node) -> Counter[str]:
    """How often each variable is used under ``node`` (declarations are not uses)."""
    found: Counter[str] = Counter()
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, VariableNode):
            found[current.name.value] += 1
        elif not isinstance(current, VariableDefinitionNode):
            for key in current.keys:
                value = getattr(current, key, None)
                if isinstance(value, Node):
                    stack.append(value)
                elif isinstance(value, tuple | list):
                    stack.extend(item for item in value if isinstance(item, Node))
    return found


def subscription_shape(
    query: str,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, object] | None,
) -> Hashable:
    """What decides how one change is encoded for a subscription: its document and the
    values of the variables used anywhere but in the root field's arguments (``after``,
    ``type`` and ``feature`` choose which changes, not how each one looks)."""
    used = _uses(document)
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            for argument in selection.arguments or ():
                used.subtract(_uses(argument))
    shaping = sorted(name for name, count in used.items() if count > 0)
    values = {name: (variables or {}).get(name) for name in shaping}
    return (query, operation.name.value if operation.name else None,
            orjson.dumps(values, option=orjson.OPT_SORT_KEYS))  # fmt: skip


class TextWebSocketAdapter(AiohttpWebSocketAdapter):
    """graphql-transport-ws speaks in text frames: the view's JSON encoder gives bytes."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        # orjson, not the standard library: it refuses NaN and Infinity, and nesting past
        # 1,024 levels, with a JSONDecodeError (the standard library's recursion on a
        # frame of a million brackets is a RecursionError, and a traceback).
        async for ws_message in self.ws:
            if ws_message.type == WSMsgType.TEXT:
                try:
                    yield orjson.loads(ws_message.data)
                except orjson.JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
            elif ws_message.type == WSMsgType.BINARY:
                raise NonTextMessageReceived

    async def send_json(self, message: Mapping[str, object]) -> None:
        await self.send_text(orjson.dumps(message))

    async def send_text(self, message: bytes) -> None:
        """Send ``message``, UTF-8 JSON already encoded, as one text frame."""
        try:
            await self.ws.send_frame(message, WSMsgType.TEXT)
        except (RuntimeError, ConnectionResetError) as exc:
            raise WebSocketDisconnected from exc


#: The messages a client may send (graphql-transport-ws).
_CLIENT_MESSAGES = frozenset({"connection_init", "ping", "pong", "subscribe", "complete"})
#: The longest operation id taken: it comes back in every message of the operation.
MAX_OPERATION_ID = 128


def frame_problem(message: object) -> str | None:
    """What is wrong with a client's graphql-transport-ws message (None: nothing). The
    reason never repeats what the client sent: it goes back in a close frame, which holds
    at most 123 bytes."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _CLIENT_MESSAGES:
        return "unknown message type"
    payload = message.get("payload")
    if kind in ("subscribe", "complete"):
        id_ = message.get("id")
        if not isinstance(id_, str) or not 0 < len(id_) <= MAX_OPERATION_ID:
            return f"{kind}: id must be a string of 1 to {MAX_OPERATION_ID} characters"
    if kind == "subscribe":
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return "subscribe: payload must be an object with a query string"
        for key, kinds in (
            ("variables", dict),
            ("operationName", str),
            ("extensions", dict),
        ):
            if payload.get(key) is not None and not isinstance(payload[key], kinds):
                return f"subscribe: payload.{key} has the wrong type"
    elif payload is not None and not isinstance(payload, dict):
        return f"{kind}: payload must be an object"
    return None


def _credentials(payload: Mapping[str, object]) -> str | None:
    for key in ("Authorization", "authorization"):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


class SubscriptionHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with features-gql's checks per operation."""

    view: FeaturesGraphQLView

    #: For each running operation, the revision of the last change written to its socket.
    _sent: dict[str, int]
    #: Set by every ``pong`` the client sends.
    _pong: asyncio.Event
    #: Whether the connection was closed for not keeping up (counted once).
    _dropped: bool

    @property
    def request(self) -> web.Request:
        return cast(TextWebSocketAdapter, self.websocket).request

    async def handle(self) -> None:
        self._sent = {}
        self._pong = asyncio.Event()
        self._dropped = False
        keepalive = asyncio.create_task(self._keep_alive(), name="features-gql-ws-keepalive")
        try:
            await super().handle()
        finally:
            keepalive.cancel()
            if self.connection_timed_out:
                # Counted here: the close ends the handler, whose shutdown cancels the
                # task that closed before it returns.
                init_timed_out(self.request)

    def on_request_accepted(self) -> None:
        # Upgraded without a token: unproven (the guard's budgets) until connection_init.
        if PRINCIPAL_KEY not in self.request:
            deadline = unproven(self.request)
            if deadline is not None:
                self.connection_init_wait_timeout = timedelta(seconds=deadline)
        super().on_request_accepted()

    async def handle_pong(self, message: PongMessage) -> None:
        self._pong.set()

    async def handle_message(self, message: Message) -> None:
        # Every frame is checked before use: whatever a client sends, a wrong frame
        # closes its connection with 4400 and a reason, never a traceback.
        problem = frame_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)

    async def _keep_alive(self) -> None:
        """Ping every interval; close a connection whose client does not answer in time
        (it vanished, or stopped reading: the ping waits behind what it has not read)."""
        view = self.view
        while True:
            await asyncio.sleep(view.keepalive_interval)
            self._pong.clear()
            try:
                async with asyncio.timeout(view.keepalive_timeout):
                    await self.send_message({"type": "ping"})
                    await self._pong.wait()
            except TimeoutError:
                break
            except WebSocketDisconnected:
                return
        if self._sent:
            # Every change after this one is unsent to some operation; the ones already
            # past it receive a few again, and miss nothing.
            reason = str(SubscriberTooSlow(min(self._sent.values())))
        else:
            reason = "subscriber not answering pings"
        log.debug("closing a subscription connection: %s", reason)
        await self._close_too_slow(reason, subscribed=bool(self.operations))

    async def _close_too_slow(self, reason: str, *, subscribed: bool) -> None:
        """Close the connection with :data:`TOO_SLOW_CLOSE_CODE` and ``reason``, counted
        once as a subscriber dropped, and within a deadline: a client that does not read
        cannot hold the close up (the frame stays queued behind what it has not read,
        for it to find if it reads again within :data:`CLOSE_LINGER` seconds)."""
        if subscribed and not self._dropped:
            self._dropped = True
            if self.view.feed is not None:
                self.view.feed.dropped_one()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.websocket.close(code=TOO_SLOW_CLOSE_CODE, reason=reason)
        except (TimeoutError, WebSocketDisconnected):
            transport = self.request.transport
            if transport is not None and not transport.is_closing():
                transport.close()
                asyncio.get_running_loop().call_later(CLOSE_LINGER, transport.abort)

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
            pipeline = self.view.pipeline
            try:
                principal = pipeline.authenticate(
                    pipeline.scope(self.request), _credentials(payload), given=True
                )
                self.auth.require(principal, "read")
            except Unauthenticated as exc:
                self._refused(str(exc))
                await self.websocket.close(code=FORBIDDEN_CLOSE_CODE, reason=f"Forbidden: {exc}")
                return
            except RateLimited as exc:
                self._refused(str(exc))
                await self.websocket.close(code=RATE_LIMITED_CLOSE_CODE, reason=str(exc)[:120])
                return
            self.request[PRINCIPAL_KEY] = principal
            claim(self.request, principal.name)
        await super().handle_connection_init(message)

    def _refused(self, reason: str) -> None:
        remote = self.request.remote or ""
        throttled_log().event(
            f"subscription refused {remote}",
            "subscription connection refused",
            reason=reason,
            remote=remote,
        )
        if self.view.metrics is not None:
            self.view.metrics.errors.labels(Unauthenticated.code).inc()

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        started = time.perf_counter()
        pipeline = self.view.pipeline
        scope = pipeline.scope(self.request)
        rid = f"{scope.request_id}.{operation.id[:32]}"
        principal = self.request.get(PRINCIPAL_KEY) or self.auth.anonymous_principal
        outcome, codes, events, name = "ok", list[str](), 0, operation.operation_name
        try:
            fresh = self.view.gate.cache.get(operation.query) is None
            limited = pipeline.take(scope)
            if limited is None and fresh:
                limited = pipeline.may_parse(scope)
            if limited is not None:
                outcome, codes = "rejected", [RATE_LIMITED]
                await operation.send_initial_errors(
                    [
                        GraphQLError(
                            str(limited),
                            extensions={
                                "code": RATE_LIMITED,
                                "limit": limited.limit,
                                "retryAfter": int(retry_after(limited.wait)),
                            },
                        )
                    ]
                )
                return
            parsing = time.thread_time()
            decision = self.view.gate.admit(
                operation.query, operation.operation_name, operation.variables, principal
            )
            if fresh:
                pipeline.parsed(scope, time.thread_time() - parsing)
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
            # The steps of graphql-core's subscribe(), so that each change is executed
            # once per shape rather than once per subscriber.
            executor = Executor.build(
                self.view.schema.graphql_schema,
                decision.document,
                context_value=context,
                raw_variable_values=dict(operation.variables or {}),
                operation_name=name,
            )
            if isinstance(executor, list):
                errors = [translate(error, rid) for error in executor]
                outcome, codes = "rejected", _codes(errors)
                await operation.send_initial_errors(errors)
                return
            source = create_source_event_stream(executor)
            if inspect.isawaitable(source):
                source = await source
            if isinstance(source, ExecutionResult):
                errors = [translate(error, rid) for error in source.errors or ()]
                outcome, codes = "rejected", _codes(errors)
                await operation.send_initial_errors(errors)
                return
            stream = source
            shape = subscription_shape(
                operation.query, decision.document, decision.operation, operation.variables
            )
            head = b'{"id":' + orjson.dumps(operation.id) + b',"type":"next","payload":'
            websocket = cast(TextWebSocketAdapter, self.websocket)
            transport = self.request.transport
            if transport is None:
                raise WebSocketDisconnected
            encoded = self.view.encoded_events
            counted = self.view.metrics.subscription_events if self.view.metrics else None
            try:
                async for event in stream:
                    key = (event.revision, shape)
                    payload = encoded.get(key)
                    if payload is None:
                        result = execute_subscription_event(
                            executor.build_per_event_executor(event)
                        )
                        if inspect.isawaitable(result):
                            result = await result
                        if result.errors:
                            errors = [translate(error, rid) for error in result.errors]
                            codes += _codes(errors)
                            outcome = "error"
                            payload = orjson.dumps(
                                {"data": result.data, "errors": [e.formatted for e in errors]}
                            )
                        else:
                            payload = encoded.put(key, orjson.dumps({"data": result.data}))
                    if operation.completed:
                        break
                    message = head + payload + b"}"
                    if transport.get_write_buffer_size() + len(message) < OUTBOX_BYTES // 2:
                        # Far below the high-water mark: this send cannot wait for a
                        # drain, and needs no deadline (a timer per change is not free).
                        await websocket.send_text(message)
                    else:
                        try:
                            async with asyncio.timeout(self.view.send_timeout):
                                await websocket.send_text(message)
                        except TimeoutError:
                            # Written, but the socket did not drain: the client has it
                            # once it reads again, so it resumes after this change.
                            raise SubscriberTooSlow(event.revision) from None
                    events += 1
                    self._sent[operation.id] = event.revision
                    if counted is not None:
                        counted.inc()
            except SubscriberTooSlow as exc:
                outcome, codes = "error", [*codes, exc.code]
                # Forgotten first: the close ends the connection, whose shutdown would
                # otherwise cancel this very task while it closes.
                self.operations.pop(operation.id, None)
                await self._close_too_slow(str(exc), subscribed=True)
                return
            except WebSocketDisconnected:
                raise  # the connection is gone: nothing to answer (handled below)
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
                self._sent.pop(operation.id, None)
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
            fields: dict[str, Any] = {
                "request_id": rid,
                "operation": name or "anonymous",
                "duration_ms": round(seconds * 1000, 3),
                "outcome": outcome,
                "errors": ",".join(sorted(set(codes))) or None,
                "events": events,
                "actor": principal.name,
            }
            if outcome == "rejected":
                # A client can send refused subscriptions as fast as it likes.
                throttled_log(request_log).event(
                    f"refused {scope.address}",
                    "graphql subscription",
                    level=logging.INFO,
                    remote=scope.address,
                    **fields,
                )
            else:
                level = logging.INFO if outcome not in ("ok", "disconnected") else logging.DEBUG
                if request_log.isEnabledFor(level):
                    request_log.log(level, "graphql subscription", extra={"fields": fields})


def _codes(errors: Any) -> list[str]:
    return [str((error.extensions or {}).get("code", "UNKNOWN")) for error in errors]
