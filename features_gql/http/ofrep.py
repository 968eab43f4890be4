"""OFREP, the OpenFeature Remote Evaluation Protocol, over HTTP.

Any OpenFeature SDK with the community's generic OFREP provider (Python, JavaScript,
Go, Java, .NET, ...) evaluates flags here unchanged. This follows OFREP 0.3.0, whose
two core endpoints are served (that version has no configuration endpoint):

- ``POST /ofrep/v1/evaluate/flags/{key}``: one flag for one evaluation context.
- ``POST /ofrep/v1/evaluate/flags``: every flag the context's resource has, and every
  defined one (``false``, ``DEFAULT``, for those it lacks), with an ``ETag``; a request
  whose ``If-None-Match`` names the current one is answered 304 with no body.

The mapping onto the domain is :mod:`features_gql.flag_evaluation`, and which features
exist is the catalog's in-memory view (:mod:`features_gql.catalog_view`). Statuses and
bodies are the protocol's: 200 with the evaluation; 400 with ``errorCode``
``PARSE_ERROR`` (the body is not a JSON object of at most :data:`MAX_BODY` bytes),
``TARGETING_KEY_MISSING`` or ``INVALID_CONTEXT``; 404 ``FLAG_NOT_FOUND`` (not a feature
name, or with ``[catalog] strict`` not a defined, live feature); 401 and 403 from the
token check every way in shares. When the store is down or misses its deadline (or a
strict catalog could not be loaded yet), the flag cannot be evaluated *for now*: 503
with ``Retry-After`` and ``errorCode: GENERAL``, whose ``errorDetails`` says which and
that retrying is safe. Anything unexpected is a 500 whose details quote the request id,
never a traceback. The metadata of every error carries the request id the logs quote.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

import orjson
from aiohttp import web

from features_gql.api import FeaturesAPI
from features_gql.auth import AuthPolicy
from features_gql.errors import StoreError, StoreTimeout
from features_gql.flag_evaluation import (
    NO_CATALOG,
    CatalogUnavailable,
    ContextError,
    FlagCatalog,
    FlagNotFound,
    check_flag_key,
    evaluation,
    resource_of,
)
from features_gql.http.pipeline import RATE_LIMITED, SCOPE_KEY, Outcome, Pipeline
from features_gql.http.request_body import DuplicateKey, TooDeep, body_now, decode_json
from features_gql.http.responses import code_for

log = logging.getLogger("features_gql.ofrep")

PREFIX: Final = "/ofrep/v1"
#: A single evaluation's path is this, then the flag's key (anything at all, decoded).
EVALUATE_PREFIX: Final = f"{PREFIX}/evaluate/flags/"
#: An evaluation context is a handful of attributes; a body past this is refused unread.
MAX_BODY: Final = 64 * 1024
REALM: Final = "features-gql ofrep"
PROTOCOL: Final = "ofrep"
JSON: Final = "application/json"

#: Seconds a client is asked to wait before retrying an evaluation the store could not
#: serve: long enough not to hammer a store that is down, short enough to notice it is back.
RETRY_AFTER: Final = 1

_STORE_DETAILS: dict[type[StoreError], str] = {
    StoreTimeout: (
        "The feature store did not answer in time; the flag was not evaluated. Retrying is safe."
    ),
}
_STORE_DEFAULT = "The feature store is unavailable; the flag was not evaluated. Retrying is safe."


class Refusal(Exception):
    """An OFREP error answer: HTTP ``status`` with ``errorCode`` and ``errorDetails``."""

    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details


#: Given as a header rather than content_type, which aiohttp parses and rebuilds.
_JSON_HEADERS: Final = {"Content-Type": JSON}


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=_JSON_HEADERS)


def _record(request: web.Request, endpoint: str, outcome: str, codes: list[str]) -> None:
    scope = request.get(SCOPE_KEY)
    if scope is not None:
        scope.outcome = Outcome(endpoint, outcome, codes, protocol=PROTOCOL)


def _request_id(request: web.Request) -> str | None:
    scope = request.get(SCOPE_KEY)
    return None if scope is None or scope.request_id == "-" else scope.request_id


async def _read_context(request: web.Request) -> object:
    """The ``context`` member of the request body, or a PARSE_ERROR :class:`Refusal`."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise Refusal(400, "PARSE_ERROR", f"The request body is larger than {MAX_BODY} bytes.")
    try:
        # A chunked body is still bounded by the application.
        raw = body_now(request)
        if raw is None:
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    if raw is None or len(raw) > MAX_BODY:
        raise Refusal(400, "PARSE_ERROR", f"The request body is larger than {MAX_BODY} bytes.")
    try:
        body = decode_json(raw)
    except DuplicateKey as exc:
        raise Refusal(
            400, "PARSE_ERROR", f"The request body repeats the key {str(exc)[:64]!r} in one object."
        ) from None
    except TooDeep as exc:
        raise Refusal(400, "PARSE_ERROR", f"The request body is {exc}.") from None
    except ValueError:
        raise Refusal(
            400, "PARSE_ERROR", 'The request body must be JSON: {"context": {"targetingKey": ...}}.'
        ) from None
    if type(body) is not dict:
        raise Refusal(
            400, "PARSE_ERROR", 'The request body must be a JSON object: {"context": {...}}.'
        )
    return body.get("context")


class OfrepEndpoints:
    """The two OFREP evaluation endpoints over one :class:`FeaturesAPI`."""

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        pipeline: Pipeline,
        default_resource_type: str | None = None,
        catalog: FlagCatalog = NO_CATALOG,
    ) -> None:
        self.api = api
        self.pipeline = pipeline
        self.default_resource_type = default_resource_type
        self.catalog = catalog

    def _refused_access(self, request: web.Request, endpoint: str) -> web.Response | None:
        entered = self.pipeline.enter_http(request, "read", realm=REALM)
        if isinstance(entered, web.Response):
            code = RATE_LIMITED if entered.status == 429 else code_for(entered.status)
            _record(request, endpoint, "rejected", [code])
            return entered
        return None

    async def evaluate(self, request: web.Request) -> web.Response:
        """``POST /ofrep/v1/evaluate/flags/{key}``."""
        return await self.evaluate_flag(request, request.match_info["key"])

    async def evaluate_flag(self, request: web.Request, key: str) -> web.Response:
        """:meth:`evaluate` for a key already taken from the path (the service's server
        does that itself, without the router: :data:`EVALUATE_PREFIX`)."""
        refused = self._refused_access(request, "evaluate")
        if refused is not None:
            return refused
        try:
            context = await _read_context(request)
            check_flag_key(key, self.catalog)
            resource = resource_of(context, self.default_resource_type)
            has = await self.api.has(resource, key)
        except Refusal as refusal:
            return self._failure(request, "evaluate", refusal, key=key)
        except ContextError as exc:
            return self._failure(request, "evaluate", Refusal(400, exc.code, exc.message), key=key)
        except FlagNotFound as exc:
            return self._failure(request, "evaluate", Refusal(404, exc.code, exc.message), key=key)
        except CatalogUnavailable as exc:
            return self._unavailable(request, "evaluate", exc, key=key)
        except StoreError as exc:
            return self._store_failure(request, "evaluate", exc, key=key)
        except (web.HTTPException, ConnectionResetError):
            # The body's read failed: it timed out or was evicted (answered by the
            # observer with its 408 or 429), or the client went away. Not ours.
            raise
        except Exception:
            return self._internal_failure(request, "evaluate")
        _record(request, "evaluate", "ok", [])
        return _json(evaluation(key, has).as_ofrep())

    async def evaluate_all(self, request: web.Request) -> web.Response:
        """``POST /ofrep/v1/evaluate/flags``: every flag of the context's resource."""
        refused = self._refused_access(request, "bulk")
        if refused is not None:
            return refused
        try:
            context = await _read_context(request)
            resource = resource_of(context, self.default_resource_type)
            (assigned,) = await self.api.features_of_many([resource])
            # Read after the assignments: a feature defined meanwhile is listed too.
            defined = self.catalog.defined()
        except Refusal as refusal:
            return self._failure(request, "bulk", refusal)
        except ContextError as exc:
            return self._failure(request, "bulk", Refusal(400, exc.code, exc.message))
        except CatalogUnavailable as exc:
            return self._unavailable(request, "bulk", exc)
        except StoreError as exc:
            return self._store_failure(request, "bulk", exc)
        except (web.HTTPException, ConnectionResetError):
            # The body's read failed: it timed out or was evicted (answered by the
            # observer with its 408 or 429), or the client went away. Not ours.
            raise
        except Exception:
            return self._internal_failure(request, "bulk")
        having = set(assigned)
        keys = sorted(having.union(defined))
        body = orjson.dumps({"flags": [evaluation(k, k in having).as_ofrep() for k in keys]})
        # The ETag names this exact answer: the same flags for the same context, the same
        # tag. A define or archive that changes the answer (a feature listed or no longer
        # listed) changes it; one that changes nothing here (a feature the resource has
        # anyway) rightly leaves a client's copy current.
        etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        _record(request, "bulk", "ok", [])
        if _matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag})
        response = web.Response(body=body, headers={"ETag": etag})
        response.headers["Content-Type"] = JSON
        return response

    def _failure(
        self, request: web.Request, endpoint: str, refusal: Refusal, *, key: str | None = None
    ) -> web.Response:
        _record(request, endpoint, "rejected", [refusal.code])
        return _json(self._error_body(request, refusal.code, refusal.details, key), refusal.status)

    def _store_failure(
        self, request: web.Request, endpoint: str, exc: StoreError, *, key: str | None = None
    ) -> web.Response:
        rid = _request_id(request)
        log.warning(
            "store error answered 503 GENERAL (%s): %s",
            exc.code,
            exc,
            extra={"fields": {"request_id": rid, "injected": exc.injected or None}},
        )
        _record(request, endpoint, "error", [exc.code])
        details = _STORE_DETAILS.get(type(exc), _STORE_DEFAULT)
        body = self._error_body(request, "GENERAL", details, key)
        if exc.injected:
            body["metadata"]["injected"] = True
        return _retry_later(body)

    def _unavailable(
        self,
        request: web.Request,
        endpoint: str,
        exc: CatalogUnavailable,
        *,
        key: str | None = None,
    ) -> web.Response:
        _record(request, endpoint, "error", ["CATALOG_UNAVAILABLE"])
        return _retry_later(self._error_body(request, "GENERAL", exc.message, key))

    def _internal_failure(self, request: web.Request, endpoint: str) -> web.Response:
        rid = _request_id(request) or "-"
        log.exception(
            "unexpected error answering an OFREP evaluation",
            extra={"fields": {"request_id": rid}},
        )
        _record(request, endpoint, "error", ["INTERNAL_SERVER_ERROR"])
        details = f"Internal error; quote request id {rid} when reporting it."
        return _json(self._error_body(request, "GENERAL", details, None), 500)

    @staticmethod
    def _error_body(
        request: web.Request, code: str, details: str, key: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {} if key is None else {"key": key}
        body["errorCode"] = code
        body["errorDetails"] = details
        rid = _request_id(request)
        body["metadata"] = {} if rid is None else {"requestId": rid}
        return body


def _retry_later(body: dict[str, Any]) -> web.Response:
    """503 with ``Retry-After``: the service is fine, the evaluation failed for now."""
    response = _json(body, 503)
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110
    prescribes for this header) or is ``*``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


async def _post_only(request: web.Request) -> web.Response:
    response = _json(
        {"errorCode": "GENERAL", "errorDetails": "OFREP evaluations are POST requests."}, 405
    )
    response.headers["Allow"] = "POST"
    return response


def mount_ofrep(
    app: web.Application,
    api: FeaturesAPI,
    *,
    auth: AuthPolicy | None = None,
    default_resource_type: str | None = None,
    catalog: FlagCatalog = NO_CATALOG,
    pipeline: Pipeline | None = None,
) -> OfrepEndpoints:
    """Serve OFREP under ``/ofrep/v1`` in an aiohttp application.

    Like :func:`~features_gql.http.app.mount_graphql`: without ``auth`` anyone who
    reaches the routes may read every flag. Add ``request_context`` to the application's
    middlewares for request ids, the request log and metrics.

    ``catalog`` says which features exist: a
    :class:`~features_gql.catalog_view.CatalogView` kept current (an embedding
    application passes its replica's, ``replica.catalog``). Without one, any feature
    name evaluates and a bulk answer lists only the resource's own features.
    """
    endpoints = OfrepEndpoints(
        api,
        pipeline=pipeline or Pipeline(auth),
        default_resource_type=default_resource_type,
        catalog=catalog,
    )
    # Any key at all, newlines included, reaches the handler, which answers FLAG_NOT_FOUND
    # for one that cannot be a feature name.
    single = EVALUATE_PREFIX + r"{key:[\s\S]*}"
    bulk = f"{PREFIX}/evaluate/flags"
    app.router.add_post(single, endpoints.evaluate)
    app.router.add_post(bulk, endpoints.evaluate_all)
    app.router.add_route("*", single, _post_only)
    app.router.add_route("*", bulk, _post_only)
    return endpoints
