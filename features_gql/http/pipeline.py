"""The one request pipeline: what every way into the service goes through.

Every entrance (GraphQL over HTTP on both paths, GraphQL over WebSocket, OFREP, the admin
routes, the metrics endpoint, the control panel and GraphiQL's files) is a decoder and an
encoder around the same steps:

1. **A scope.** The observer (``http/app.py``) makes one :class:`RequestScope` per request
   — its id, the client's address, the credentials as sent, its deadline — and hands it to
   the entrance on the request (:data:`SCOPE_KEY`). The entrance records its outcome on it
   for the metrics and the request log, which the observer writes once it has answered.
2. **Limits per client.** One client address may send so many requests a second
   (:meth:`Pipeline.limit_address`, run by the observer for every request but the health
   probes), one token so many (:meth:`Pipeline.enter`), and each client may keep the
   event loop busy parsing query texts it has not sent before for so long
   (:meth:`Pipeline.may_parse`, :meth:`Pipeline.parsed`). Over a limit: ``429`` with
   ``Retry-After``, or a typed GraphQL error on a WebSocket.
3. **Authentication, once.** :meth:`Pipeline.enter` authenticates the request's
   credentials the first time an entrance asks, keeps the principal on the scope, and
   checks the scope the entrance needs. Every refusal has the same answer everywhere:
   401 with a Bearer challenge, 403, 429.

An application made by :func:`~features_gql.http.app.create_app` has one
:class:`Pipeline` (:data:`PIPELINE_KEY`); every route it serves is either entered through
it or declared public (:data:`PUBLIC_KEY`), and ``tests/test_request_pipeline.py``
enumerates the routes to prove it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web

from features_gql.auth import AuthPolicy, Principal, Unauthenticated
from features_gql.http.connections import claim, peer_address
from features_gql.http.responses import error_response
from features_gql.http.throttled_log import ThrottledLog
from features_gql.rate_limits import Limiter, RateLimits, retry_after

if TYPE_CHECKING:
    from features_gql.events import OperationEvent
    from features_gql.metrics import Metrics

log = logging.getLogger("features_gql.http")

RATE_LIMITED = "RATE_LIMITED"
#: Seconds a request may take, from its headers to its answer, when nothing shorter is
#: configured: the general path's execution is cancelled past it.
REQUEST_DEADLINE = 30.0


class Outcome(NamedTuple):
    """What the request log and metrics need to know about one request an entrance
    answered: a GraphQL operation, or (``protocol="ofrep"``) an OFREP evaluation, whose
    ``operation`` is then its endpoint."""

    operation: str | None
    outcome: str
    codes: list[str]
    #: A mutation: logged at INFO even when it succeeds (the audit trail).
    write: bool = False
    protocol: str = "graphql"


@dataclass(slots=True, eq=False)
class RequestScope:
    """One request, as every step of the pipeline sees it; made once, passed along."""

    request_id: str
    #: The client, as every per-client limit knows it: its IPv4 address, or its IPv6
    #: address's /64 (``connections.client_key``); "" when unknown.
    address: str
    #: The ``Authorization`` header as sent (an edge forwards a caller's writes with it).
    authorization: str | None
    #: The store calls the request caused, for its slow-request warning.
    operations: list[OperationEvent] = field(default_factory=list)
    #: ``time.monotonic()`` past which the request is not worth answering.
    deadline: float = 0.0
    #: Set by the entrance that answered; None for answers that are not operations.
    outcome: Outcome | None = None
    #: Who is asking, once an entrance has authenticated the request.
    principal: Principal | None = None
    #: The policy that authenticated ``principal`` (an application may mount two).
    policy: AuthPolicy | None = None
    #: Whether the address's request bucket was charged for this request already.
    counted: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


SCOPE_KEY = web.RequestKey("features_gql.scope", RequestScope)


class RateLimited(Exception):
    """A client went over one of its limits; it may retry after ``wait`` seconds."""

    code = RATE_LIMITED

    def __init__(self, limit: str, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        super().__init__(
            f"Too many requests from this {limit}; retry in {retry_after(wait)} s."
            if limit != "parse"
            else "Too many new query texts from this client; send queries it has sent "
            f"before, or retry in {retry_after(wait)} s."
        )


request_log = logging.getLogger("features_gql.request")

_THROTTLED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ThrottledLog]] = (
    weakref.WeakKeyDictionary()
)


def throttled_log(logger: logging.Logger = log) -> ThrottledLog:
    """``logger`` in this event loop, for events a client can repeat at will (refusals):
    one line per kind and interval, with a count."""
    loop = asyncio.get_running_loop()
    logs = _THROTTLED.get(loop)
    if logs is None:
        logs = _THROTTLED[loop] = {}
    throttled = logs.get(logger.name)
    if throttled is None:
        throttled = logs[logger.name] = ThrottledLog(logger, loop)
    return throttled


class Pipeline:
    """Authentication, scope checks and rate limits for every entrance of one
    application (see the module docstring)."""

    def __init__(
        self,
        auth: AuthPolicy | None = None,
        *,
        rate_limits: RateLimits | None = None,
        metrics: Metrics | None = None,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        limits = rate_limits or RateLimits()
        self.auth = auth or AuthPolicy.open()
        self.rate_limits = limits
        self.metrics = metrics
        self.request_deadline = request_deadline
        self._tokens = None if limits.per_token.unlimited else Limiter(limits.per_token)
        self._addresses = None if limits.per_address.unlimited else Limiter(limits.per_address)
        self._parsing = None if limits.parse_seconds.unlimited else Limiter(limits.parse_seconds)

    # -- the scope -------------------------------------------------------------------------

    def begin(self, request: web.Request, request_id: str) -> RequestScope:
        """A new request's scope, kept on the request for the entrance that answers it."""
        # The guarded server knows each connection's client already (computed once per
        # connection, not per request); anything else is asked here.
        peer = getattr(request.protocol, "peer", None)
        address = peer.address if peer is not None else ""
        if not address:
            transport = request.transport
            address = peer_address(
                None if transport is None else transport.get_extra_info("peername")
            )
        scope = RequestScope(
            request_id,
            address,
            request.headers.get("Authorization"),
            [],
            time.monotonic() + self.request_deadline,
        )
        request[SCOPE_KEY] = scope
        return scope

    def scope(self, request: web.Request) -> RequestScope:
        """The request's scope; made here when no observer made one (an application that
        mounts an entrance without :func:`~features_gql.http.app.request_context`)."""
        scope = request.get(SCOPE_KEY)
        if scope is None:
            scope = self.begin(request, "-")
        return scope

    # -- limits ----------------------------------------------------------------------------

    def limit_address(self, scope: RequestScope) -> RateLimited | None:
        """Charge the request to its address; the refusal when the address is over."""
        scope.counted = True
        limiter = self._addresses
        if limiter is None:
            return None
        wait = limiter.take(scope.address)
        return None if wait == 0.0 else self._limited("address", wait)

    def may_parse(self, scope: RequestScope) -> RateLimited | None:
        """Whether the client (its token, or its address when anonymous) may have a query
        text the service has not parsed before parsed now: not while the parsing it caused
        before is still being paid for (:meth:`parsed`)."""
        limiter = self._parsing
        if limiter is None:
            return None
        wait = limiter.take(self._parser_key(scope), 0.0)
        return None if wait == 0.0 else self._limited("parse", wait)

    def parsed(self, scope: RequestScope, seconds: float) -> None:
        """Charge the client the ``seconds`` that parsing and validating a new text took."""
        if self._parsing is not None:
            self._parsing.charge(self._parser_key(scope), seconds)

    @staticmethod
    def _parser_key(scope: RequestScope) -> str:
        principal = scope.principal
        if principal is not None and not principal.anonymous:
            return f"token:{principal.name}"
        return scope.address

    def take(self, scope: RequestScope) -> RateLimited | None:
        """Charge one more operation (a WebSocket's ``subscribe``) to the client."""
        principal = scope.principal
        if principal is not None and not principal.anonymous and self._tokens is not None:
            wait = self._tokens.take(principal.name)
            if wait:
                return self._limited("token", wait)
        if self._addresses is not None:
            wait = self._addresses.take(scope.address)
            if wait:
                return self._limited("address", wait)
        return None

    def _limited(self, limit: str, wait: float) -> RateLimited:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(limit).inc()
        return RateLimited(limit, wait)

    # -- authentication --------------------------------------------------------------------

    def authenticate(
        self, scope: RequestScope, credentials: str | None = None, *, given: bool = False
    ) -> Principal:
        """The scope's principal, authenticated once (by this pipeline's policy) from the
        request's ``Authorization`` header, or from ``credentials`` when ``given`` (a
        WebSocket's ``connection_init``). Raises :class:`Unauthenticated` for credentials
        that name no token, :class:`RateLimited` for a token over its limit."""
        principal = scope.principal
        if principal is not None and scope.policy is self.auth and not given:
            return principal
        # A refusal is logged by whoever answers it, once per client and interval.
        principal = self.auth.authenticate(credentials if given else scope.authorization)
        if not principal.anonymous and self._tokens is not None:
            wait = self._tokens.take(principal.name)
            if wait:
                raise self._limited("token", wait)
        scope.principal = principal
        scope.policy = self.auth
        return principal

    def enter(
        self, scope: RequestScope, needs: str | None, *, some_scope: bool = False
    ) -> Principal:
        """The caller of a request to an entrance that needs scope ``needs`` (None: any
        caller the policy accepts; with ``some_scope``, one that may do something, which
        the entrance checks per operation). Raises :class:`RateLimited`,
        :class:`Unauthenticated` (no token where one is needed) or :class:`Forbidden`:
        each entrance answers them in its protocol's terms."""
        if not scope.counted:
            limited = self.limit_address(scope)
            if limited is not None:
                raise limited
        principal = self.authenticate(scope)
        if needs is not None:
            self.auth.require(principal, needs)
            if not principal.can(needs):
                raise Forbidden(principal, needs)
        elif some_scope and not principal.scopes:
            self.auth.require(principal, "read")
        return principal

    def enter_http(
        self, request: web.Request, needs: str | None, *, realm: str = "features-gql"
    ) -> Principal | web.Response:
        """:meth:`enter` for an HTTP entrance: the principal, or the answer to give (401
        with a Bearer challenge, 403, or 429 with ``Retry-After``)."""
        scope = self.scope(request)
        try:
            principal = self.enter(scope, needs)
        except Unauthenticated as exc:
            return unauthenticated(exc, realm)
        except Forbidden as exc:
            return error_response(403, str(exc), "FORBIDDEN")
        except RateLimited as exc:
            return too_many_requests(exc)
        # What remains of its body now counts against the principal's budget.
        claim(request, principal.name)
        return principal


class Forbidden(Exception):
    """A token that lacks the scope an entrance needs."""

    code = "FORBIDDEN"

    def __init__(self, principal: Principal, scope: str) -> None:
        super().__init__(f"The token {principal.name!r} lacks the {scope!r} scope.")
        self.principal = principal
        self.scope = scope


def unauthenticated(exc: Unauthenticated, realm: str = "features-gql") -> web.Response:
    """HTTP 401 with a Bearer challenge: the answer of every way in to a missing or
    unknown token where one is needed."""
    return error_response(
        401,
        str(exc),
        Unauthenticated.code,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )


def too_many_requests(exc: RateLimited) -> web.Response:
    """HTTP 429 with ``Retry-After``: the answer of every way in to a client over a limit."""
    return error_response(
        429,
        str(exc),
        RATE_LIMITED,
        headers={"Retry-After": retry_after(exc.wait)},
        limit=exc.limit,
        retryAfterSeconds=round(exc.wait, 3),
    )


def public(app: web.Application, *resources: web.AbstractResource | None) -> None:
    """Declare routes that serve no data and need no token (health probes, the files of
    the control panel and GraphiQL): what the route test allows to skip authentication."""
    declared = app.get(PUBLIC_KEY)
    if declared is None:
        declared = app[PUBLIC_KEY] = set()
    declared.update(resource.canonical for resource in resources if resource is not None)


PIPELINE_KEY = web.AppKey("features_gql.pipeline", Pipeline)
PUBLIC_KEY = web.AppKey("features_gql.public_routes", set[str])
