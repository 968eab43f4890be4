"""A client of an upstream features-gql service, for an edge replica.

Reads the upstream's change log, snapshots and revision over GraphQL-over-HTTP, follows
its ``featureChanges`` subscription over WebSocket (``graphql-transport-ws``), and
forwards writes with the caller's own credentials. Every failure is typed:

* :class:`~features_gql.errors.UpstreamUnavailable` when the upstream cannot be reached
  or does not answer in time (``maybe_applied`` when a write may have landed anyway);
* :class:`~features_gql.errors.UpstreamRefused` when it answers with an error of its own
  (a token it does not know, a scope the token lacks...), with the upstream's code;
* :class:`~features_gql.errors.ChangesTrimmed` when its change log no longer holds the
  changes asked for (``RESYNC_REQUIRED``): the edge resyncs from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from features_gql.domain import Assignment, ChangeEvent, Resource, SnapshotPage, WriteResult
from features_gql.errors import (
    ChangesTrimmed,
    ConfigError,
    MalformedUpstream,
    StoreTimeout,
    StoreUnavailable,
    UpstreamRefused,
    UpstreamUnavailable,
)
from features_gql.replication import wire

log = logging.getLogger("features_gql.upstream")

#: Seconds to connect to the upstream, and for one request to it.
CONNECT_TIMEOUT = 1.0
REQUEST_TIMEOUT = 1.5
#: Seconds between WebSocket pings: a silent upstream is given up after about this long.
HEARTBEAT = 5.0

_EVENT = "revision op resource { type id } feature actor at"
REVISION = "query EdgeRevision { revision }"
CHANGES = f"query EdgeChanges($after: Revision!, $first: Int!) {{ changes(after: $after, first: $first) {{ {_EVENT} }} }}"  # noqa: E501
SNAPSHOT = (
    "query EdgeSnapshot($after: String, $first: Int!) { snapshot(after: $after, first: $first) "
    "{ revision assignments endCursor hasNextPage } }"
)
SUBSCRIBE = (
    f"subscription EdgeFollow($after: Revision) {{ featureChanges(after: $after) {{ {_EVENT} }} }}"
)
CATALOG = (
    "query EdgeCatalog($after: String) { features(defined: true, archived: false, "
    "first: 1000, after: $after) { edges { node { name } } pageInfo { hasNextPage endCursor } } }"
)
_WRITE = (
    "mutation Edge{name}($r: ResourceInput!, $f: String!) {{ {field}(resource: $r, feature: $f) "
    "{{ __typename ... on FeatureChange {{ changed revision }} "
    "... on InvalidInput {{ field rule message }} }} }}"
)
WRITES = {
    "add": ("addFeature", _WRITE.format(name="Add", field="addFeature")),
    "remove": ("removeFeature", _WRITE.format(name="Remove", field="removeFeature")),
}


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL of a GraphQL endpoint, else a ConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"the upstream must be an http(s) URL of a GraphQL endpoint, like "
            f"http://central:8080/graphql (got {url!r})"
        )
    if parts.username or parts.password:
        raise ConfigError("give the upstream's token with --upstream-token, not in the URL")
    return url


def websocket_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))


def _error(errors: object) -> Exception:
    """The typed error for the upstream's GraphQL errors (the first one decides)."""
    error = wire.graphql_error(errors)
    code, message, extensions = error.code, error.message, error.extensions
    if code == ChangesTrimmed.code:
        return ChangesTrimmed(*error.trimmed())
    if code == StoreTimeout.code:
        return StoreTimeout(
            f"upstream: {message}", maybe_applied=bool(extensions.get("maybeApplied"))
        )
    if code in ("STORE_UNAVAILABLE", "STORE_CONFLICT", UpstreamUnavailable.code):
        # The upstream is up but cannot answer: as unavailable as if it were down.
        return UpstreamUnavailable(f"upstream answered {code}: {message}")
    return UpstreamRefused(code, message, extensions)


class UpstreamClient:
    """The edge's connection to the upstream service (see the module docstring)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = check_url(url)
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    def describe(self) -> str:
        return self.url

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamUnavailable("the upstream client is not open")
        return self._session

    def _headers(self, authorization: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return headers

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        authorization: str | None = None,
        write: bool = False,
        within: float | None = None,
    ) -> dict[str, Any]:
        """POST one GraphQL request; its ``data``, or a typed error."""
        payload = {"query": query, "variables": dict(variables or {})}
        sent = False
        try:
            async with asyncio.timeout(within or REQUEST_TIMEOUT):
                async with self.session.post(
                    self.url, json=payload, headers=self._headers(authorization)
                ) as response:
                    sent = True
                    body = await response.read()
                    status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise UpstreamUnavailable(f"cannot reach the upstream {self.url}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(
                f"the upstream {self.url} did not answer: {type(exc).__name__} {exc}",
                maybe_applied=write and sent,
            ) from exc
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"the upstream {self.url} answered HTTP {status} without JSON",
                maybe_applied=write,
            ) from None
        if not isinstance(answer, dict):
            raise UpstreamUnavailable(f"the upstream {self.url} answered {type(answer).__name__}")
        errors = answer.get("errors")
        if errors:
            raise _error(errors)
        if status >= 400:
            raise UpstreamUnavailable(f"the upstream {self.url} answered HTTP {status}")
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    # -- reads (with the edge's own token) ------------------------------------------------

    async def revision(self) -> int:
        data = await self.execute(REVISION, authorization=self._bearer)
        return wire.store_revision(data)

    @property
    def _bearer(self) -> str | None:
        return None if self.token is None else f"Bearer {self.token}"

    async def changes_since(self, after: int, *, limit: int = 1000) -> list[ChangeEvent]:
        data = await self.execute(
            CHANGES, {"after": after, "first": limit}, authorization=self._bearer
        )
        return wire.changes(data, after)

    async def snapshot_page(
        self, after: str | None, *, limit: int = 5000, last: Assignment | None = None
    ) -> tuple[SnapshotPage, wire.Page]:
        """A snapshot page, and where the next one starts. ``last`` is the last assignment
        of the page before: this one's must all come after it."""
        data = await self.execute(
            SNAPSHOT, {"after": after, "first": limit}, authorization=self._bearer, within=10
        )
        return wire.snapshot_page(data, last)

    async def live_features(self, *, max_pages: int = 10_000) -> list[str]:
        """The names of the upstream's live features (defined, not archived).

        Paging that makes no progress (a cursor seen before while more pages are said to
        follow), or that goes on past ``max_pages``, is refused as malformed."""
        names: list[str] = []
        after: str | None = None
        paging = wire.Paging("features.pageInfo.endCursor")
        for _ in range(max_pages):
            data = await self.execute(
                CATALOG, {"after": after}, authorization=self._bearer, within=10
            )
            page, more = wire.catalog_page(data)
            names.extend(page)
            after = paging.next_cursor(more)
            if after is None:
                return names
        raise MalformedUpstream(
            "features.pageInfo", f"more than {max_pages} catalog pages: paging never ends"
        )

    async def subscribe(self, after: int) -> AsyncGenerator[ChangeEvent, None]:
        """Every change after ``after``, pushed by the upstream over WebSocket.

        Raises UpstreamUnavailable when the connection fails or ends (the reason tells
        why: ``subscriber too slow`` means resume at once), ChangesTrimmed for a
        revision the upstream's log no longer holds, and :class:`NoSubscriptions` when
        the upstream does not serve them (follow by polling then).
        """
        headers = self._headers(self._bearer)
        try:
            ws = await self.session.ws_connect(
                websocket_url(self.url),
                protocols=("graphql-transport-ws",),
                headers=headers,
                heartbeat=HEARTBEAT,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise UpstreamRefused(
                    "UNAUTHENTICATED", f"the upstream refused the edge's token ({exc.status})", {}
                ) from exc
            raise NoSubscriptions(f"the upstream refused a WebSocket ({exc.status})") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(f"cannot reach the upstream {self.url}: {exc}") from exc
        try:
            init = {} if self._bearer is None else {"Authorization": self._bearer}
            await ws.send_str(orjson.dumps({"type": "connection_init", "payload": init}).decode())
            ack = await self._receive(ws, REQUEST_TIMEOUT)
            if ack.get("type") != "connection_ack":
                raise MalformedUpstream(
                    "connection_ack", f"expected, got a message of type {ack.get('type')!r:.40}"
                )
            subscribe = {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIBE, "variables": {"after": after}},
            }
            await ws.send_str(orjson.dumps(subscribe).decode())
            while True:
                message = await self._receive(ws, None)
                kind = message.get("type")
                if kind == "next":
                    payload = message.get("payload")
                    if isinstance(payload, dict) and payload.get("errors"):
                        raise _error(payload["errors"])
                    yield wire.subscription_change(payload)
                elif kind == "error":
                    raise _error(message.get("payload"))
                elif kind == "complete":
                    raise UpstreamUnavailable("the upstream ended the subscription")
                elif kind == "ping":
                    await ws.send_str('{"type":"pong"}')
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    @staticmethod
    async def _receive(
        ws: aiohttp.ClientWebSocketResponse, within: float | None
    ) -> Mapping[str, Any]:
        try:
            message = await ws.receive(timeout=within)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(f"the upstream connection failed: {exc!r}") from exc
        if message.type == aiohttp.WSMsgType.TEXT:
            return wire.message(message.data)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
            raise UpstreamUnavailable(
                f"the upstream closed the subscription ({message.data}: {message.extra})",
                resume_at_once=message.data == 4410,
            )
        raise UpstreamUnavailable(f"the upstream connection ended ({message.type.name})")

    # -- writes (with the caller's token) ------------------------------------------------

    async def write(
        self,
        op: str,
        resource: Resource,
        feature: str,
        *,
        authorization: str | None,
        within: float,
    ) -> WriteResult:
        field, mutation = WRITES[op]
        data = await self.execute(
            mutation,
            {"r": {"type": resource.type, "id": resource.id}, "f": feature},
            authorization=authorization,
            write=True,
            within=within,
        )
        return wire.write_answer(data, field)


class NoSubscriptions(StoreUnavailable):
    """The upstream refuses WebSocket subscriptions: follow it by polling instead."""
