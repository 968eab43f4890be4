"""Strawberry's aiohttp view, speaking the GraphQL-over-HTTP media types and status codes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from cross_web import HTTPException
from graphql import GraphQLError
from strawberry.aiohttp.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from features_gql.api import FeaturesAPI
from features_gql.graphql.context import Context
from features_gql.graphql.errors import translate
from features_gql.graphql.fast_path import FastPath
from features_gql.graphql.schema import MAX_TOKENS
from features_gql.request_context import request_id

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"

REQUEST_KEY = web.RequestKey("features_gql.request_id", str)
ACCEPT_KEY = web.ResponseKey("features_gql.accept", str)
CONTEXT_KEY = web.RequestKey("features_gql.context", Context)


def wants_graphql_response(accept: str) -> bool:
    """Whether the client prefers ``application/graphql-response+json`` (GraphQL over HTTP).

    Clients that send no Accept header, or accept ``application/json`` first, get
    the legacy ``application/json`` behaviour: HTTP 200 for every well-formed request.
    """
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        media = pieces[0].lower()
        if media not in (GRAPHQL_RESPONSE, JSON):
            continue
        quality = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        key = (-quality, position, media)
        if quality > 0 and (best is None or key < best):
            best = key
    return best is not None and best[2] == GRAPHQL_RESPONSE


@dataclass
class GraphQLOutcome:
    """What the request log and metrics need to know about one GraphQL request."""

    operation: str | None
    outcome: str
    codes: list[str]


OUTCOME_KEY = web.RequestKey("features_gql.graphql_outcome", GraphQLOutcome)


def error_codes(errors: Iterable[GraphQLError]) -> list[str]:
    """The ``extensions.code`` of each error, for the request log and metrics."""
    return [str((error.extensions or {}).get("code", "UNKNOWN")) for error in errors]


class FeaturesGraphQLView(GraphQLView[Context, None]):
    def __init__(self, api: FeaturesAPI, *, fast_path: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api
        self.fast_path = (
            FastPath(self.schema._schema, max_tokens=MAX_TOKENS)  # type: ignore[attr-defined]
            if fast_path
            else None
        )

    async def _answer_fast(self, request: web.Request) -> web.Response | None:
        """Answer a hot query shape through the compiled fast path, or return None."""
        assert self.fast_path is not None
        accept = request.headers.get("Accept", "")
        if request.content_type != JSON or "multipart" in accept or "event-stream" in accept:
            return None
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        if type(payload) is not dict or payload.get("extensions"):
            return None
        query, name = payload.get("query"), payload.get("operationName")
        variables = payload.get("variables")
        if variables is None:
            # Only null means no variables: `[]`, `""` or `0` are refused by the general path.
            variables = {}
        if type(query) is not str or type(variables) is not dict:
            return None
        if name is not None and type(name) is not str:
            return None
        plan = self.fast_path.plan(query, name)
        if plan is None:
            return None
        answer = await self.fast_path.answer(plan, variables, self.api, request.get(REQUEST_KEY))
        if answer is None:
            return None
        response_data: dict[str, Any] = {"data": answer.data}
        if answer.errors:
            response_data["errors"] = [error.formatted for error in answer.errors]
        codes = error_codes(answer.errors)
        request[OUTCOME_KEY] = GraphQLOutcome(
            plan.operation_name, "error" if codes else "ok", codes
        )
        response = web.Response()
        response[ACCEPT_KEY] = accept
        return self.create_response(response_data, response)  # type: ignore[arg-type]

    async def get_context(self, request: web.Request, response: Any) -> Context:
        context = Context(
            api=self.api,
            request_id=request.get(REQUEST_KEY) or request_id.get() or "-",
            actor=request.headers.get("X-Actor"),
        )
        request[CONTEXT_KEY] = context
        return context

    async def process_result(
        self, request: web.Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # Errors raised before execution (parse) bypass the schema extension.
            rid = request.get(REQUEST_KEY)
            result.errors = [translate(error, rid) for error in result.errors]
        response = await super().process_result(request, result)
        # A request error (parse, validation, variables) stops before execution: the
        # GraphQL spec says such a response has no `data` entry at all.
        rejected = bool(
            result.data is None and result.errors and all(e.path is None for e in result.errors)
        )
        if rejected:
            response.pop("data", None)
        context = request.get(CONTEXT_KEY)
        codes = error_codes(result.errors or ())
        request[OUTCOME_KEY] = GraphQLOutcome(
            operation=context.operation_name if context is not None else None,
            outcome="rejected" if rejected else "error" if codes else "ok",
            codes=codes,
        )
        return response

    async def parse_http_body(self, request: Any) -> Any:
        # Strawberry assumes a JSON body is an object (or a batch list); `null`, a number
        # or a string would crash it into a 500. Refuse them as the client error they are.
        if request.method == "POST" and JSON in (request.content_type or ""):
            body = self.parse_json(await request.get_body())
            if not isinstance(body, dict | list):
                raise HTTPException(400, "The request body must be a JSON object with a query")
        return await super().parse_http_body(request)

    def decode_json(self, data: str | bytes) -> object:
        # orjson: faster, and it rejects invalid UTF-8 with a JSONDecodeError (a 400).
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: web.Response,
    ) -> web.Response:
        sub_response.body = orjson.dumps(response_data)
        if wants_graphql_response(sub_response.get(ACCEPT_KEY, "")):
            sub_response.content_type = GRAPHQL_RESPONSE
            if isinstance(response_data, dict) and "data" not in response_data:
                sub_response.set_status(400)
        else:
            sub_response.content_type = JSON
        return sub_response

    async def get_sub_response(self, request: web.Request) -> web.Response:
        response = web.Response()
        # Strawberry hands create_response only the sub-response: carry Accept on it.
        response[ACCEPT_KEY] = request.headers.get("Accept", "")
        return response

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.fast_path is not None and request.method == "POST":
            fast = await self._answer_fast(request)
            if fast is not None:
                return fast
        try:
            return await self.run(request=request)
        except HTTPException as exc:
            status = exc.status_code
            if status == 400 and exc.reason == "Unsupported content type":
                status = 415  # GraphQL over HTTP: a media type the server does not take
            code = "UNSUPPORTED_MEDIA_TYPE" if status == 415 else "BAD_REQUEST"
            body = {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}
            media = (
                GRAPHQL_RESPONSE
                if wants_graphql_response(request.headers.get("Accept", ""))
                else JSON
            )
            return web.Response(
                body=json.dumps(body).encode(),
                status=status,
                content_type=media,
                headers={"Allow": "GET, POST"} if status == 405 else None,
            )
