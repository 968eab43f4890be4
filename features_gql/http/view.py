"""Strawberry's aiohttp view, speaking the GraphQL-over-HTTP media types and status codes."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web
from cross_web import HTTPException
from strawberry.aiohttp.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from features_gql.api import FeaturesAPI
from features_gql.graphql.context import Context
from features_gql.graphql.errors import translate
from features_gql.request_context import request_id

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"

REQUEST_KEY = web.RequestKey("features_gql.request_id", str)
ACCEPT_KEY = web.ResponseKey("features_gql.accept", str)


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


class FeaturesGraphQLView(GraphQLView[Context, None]):
    def __init__(self, api: FeaturesAPI, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api

    async def get_context(self, request: web.Request, response: Any) -> Context:
        return Context(
            api=self.api,
            request_id=request.get(REQUEST_KEY) or request_id.get() or "-",
            actor=request.headers.get("X-Actor"),
        )

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
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            response.pop("data", None)
        return response

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
        try:
            return await self.run(request=request)
        except HTTPException as exc:
            body = {"errors": [{"message": exc.reason, "extensions": {"code": "BAD_REQUEST"}}]}
            media = (
                GRAPHQL_RESPONSE
                if wants_graphql_response(request.headers.get("Accept", ""))
                else JSON
            )
            return web.Response(
                body=json.dumps(body).encode(),
                status=exc.status_code,
                content_type=media,
                headers={"Allow": "GET, POST"} if exc.status_code == 405 else None,
            )
