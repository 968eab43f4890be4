"""The Query and Mutation roots and the schema they form."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.query_depth_limiter import create_validator as create_depth_validator
from strawberry.types import ExecutionContext

from features_gql import domain
from features_gql.errors import InvalidInput
from features_gql.graphql.errors import ErrorCodes
from features_gql.graphql.types import (
    ChangeEvent,
    Check,
    CheckInput,
    Feature,
    FeatureChange,
    FeatureChangeResult,
    Health,
    Info,
    InvalidInputError,
    Resource,
    ResourceInput,
    StoreHealth,
)

MAX_DEPTH = 10
MAX_TOKENS = 50_000


# Every field that a store call answers is nullable. When a call fails, the fields it
# answers are null, each with a typed error at its own path, and fields answered by other
# calls are still returned: a non-null field would null its parent instead, up to the
# whole response. One call is one unit of failure: the `hasFeature` fields of a request
# share one check_many call (a DataLoader batch) and fail together; they are not retried
# one by one, which would multiply the load on a store that is already failing.
@strawberry.type
class Query:
    @strawberry.field(description="Does this resource have this feature?")
    async def has_feature(self, info: Info, resource: ResourceInput, feature: str) -> bool | None:
        return await info.context.api.has(resource.to_domain(), feature)

    @strawberry.field(description="A resource, whether or not it has any features.")
    def resource(self, type: str, id: str) -> Resource:
        return Resource.of(domain.Resource.of(type, id))

    @strawberry.field(description="A feature, whether or not any resource has it.")
    def feature(self, name: str) -> Feature:
        return Feature(name=domain.validate_feature(name, "name"))

    @strawberry.field(description="Many checks in one store round trip, answered in order.")
    async def checks(self, info: Info, items: list[CheckInput]) -> list[Check] | None:
        # FeaturesAPI validates item by item, so the first bad item is the one reported.
        asked = [((item.resource.type, item.resource.id), item.feature) for item in items]
        answers = await info.context.api.check_many(asked)
        return [
            Check(resource=Resource(type=type_, id=id_), feature=feature, enabled=enabled)
            for ((type_, id_), feature), enabled in zip(asked, answers, strict=True)
        ]

    @strawberry.field(
        description="For each id, whether (type, id) has each feature: one row per id, one "
        "column per feature, in one store call. The cheap shape for large batches."
    )
    async def check_matrix(
        self, info: Info, type: str, ids: list[str], features: list[str]
    ) -> list[list[bool]] | None:
        return await info.context.api.check_matrix(type, ids, features)

    @strawberry.field(description="Service health, with a live probe of the store.")
    async def health(self, info: Info) -> Health:
        probe = await info.context.api.probe(0.5)
        return Health(
            status="ok" if probe.up else "degraded",
            store=StoreHealth(
                name=probe.store,
                up=probe.up,
                latency_ms=round(probe.seconds * 1000, 3),
                reason=probe.reason,
            ),
        )

    @strawberry.field(description="The revision of the latest change.")
    async def revision(self, info: Info) -> int | None:
        return await info.context.api.revision()

    @strawberry.field(description="Changes after revision `after`, oldest first (at most 1000).")
    async def changes(
        self, info: Info, after: int = 0, first: int = 100
    ) -> list[ChangeEvent] | None:
        events = await info.context.api.changes_since(after, limit=first)
        return [ChangeEvent.of(event) for event in events]


async def _change(
    info: Info, op: str, resource: ResourceInput, feature: str
) -> FeatureChange | InvalidInputError:
    api = info.context.api
    try:
        target = resource.to_domain()
        call = api.add if op == "add" else api.remove
        result = await call(target, feature, actor=info.context.actor)
    except InvalidInput as exc:
        return InvalidInputError(field=exc.field, rule=exc.rule, message=exc.message)
    return FeatureChange(
        resource=Resource.of(target),
        feature=feature,
        changed=result.changed,
        revision=result.revision,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Give a resource a feature. Adding twice is not an error.")
    async def add_feature(
        self, info: Info, resource: ResourceInput, feature: str
    ) -> FeatureChangeResult | None:
        return await _change(info, "add", resource, feature)

    @strawberry.mutation(
        description="Take a feature from a resource. Removing an absent one is not an error."
    )
    async def remove_feature(
        self, info: Info, resource: ResourceInput, feature: str
    ) -> FeatureChangeResult | None:
        return await _change(info, "remove", resource, feature)


# One rule class for the process: QueryDepthLimiter builds a new class per instance, and
# a new class per request makes every request miss the validation cache (the rules are
# part of its key), which costs ~3 ms of validation per request.
_DEPTH_RULE = create_depth_validator(MAX_DEPTH, None, None)


class DepthLimit(AddValidationRules):
    """Refuses queries nested deeper than MAX_DEPTH."""

    def __init__(self) -> None:
        super().__init__([_DEPTH_RULE])


class FeaturesSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged what deserves logging, with the request id.
        return None


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    extensions: list[Any] = [
        ErrorCodes,
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        DepthLimit,
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    ext: list[type[SchemaExtension] | Any] = extensions
    return FeaturesSchema(query=Query, mutation=Mutation, extensions=ext)


def schema_sdl() -> str:
    """The schema in SDL, as committed in ``schema.graphql``."""
    return build_schema().as_str() + "\n"
