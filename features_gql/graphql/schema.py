"""The Query and Mutation roots and the schema they form."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError, GraphQLSchema
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from features_gql import cursors, domain
from features_gql.auth import AuthPolicy
from features_gql.errors import InvalidInput
from features_gql.graphql import hot_fields
from features_gql.graphql.admission import Gate, Limits, Refused
from features_gql.graphql.catalog import CatalogMutations, CatalogQueries
from features_gql.graphql.errors import ErrorCodes
from features_gql.graphql.scalars import NO_REVISION, SCALARS, Revision
from features_gql.graphql.types import (
    ID_TEXT,
    SLUG,
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
    SnapshotPage,
    StoreHealth,
    SyncState,
    SyncStatus,
    Viewer,
    described,
)

# Every field that a store call answers is nullable. When a call fails, the fields it
# answers are null, each with a typed error at its own path, and fields answered by other
# calls are still returned: a non-null field would null its parent instead, up to the
# whole response. One call is one unit of failure: the `hasFeature` fields of a request
# share one check_many call (a DataLoader batch) and fail together; they are not retried
# one by one, which would multiply the load on a store that is already failing.
FEATURE = f"The feature's name: {SLUG}."


@strawberry.type(description="What can be asked.")
class Query(CatalogQueries):
    @strawberry.field(description="Does this resource have this feature? The hot-path check.")
    async def has_feature(
        self,
        info: Info,
        resource: Annotated[ResourceInput, described("The resource asked about.")],
        feature: Annotated[str, described(FEATURE)],
    ) -> bool | None:
        return await hot_fields.has_feature(info.context, resource.type, resource.id, feature)

    @strawberry.field(description="A resource, whether or not it has any features.")
    def resource(
        self,
        type: Annotated[str, described(f"The resource's type: {SLUG}.")],
        id: Annotated[str, described(f"The resource's id: {ID_TEXT}.")],
    ) -> Resource:
        return Resource.of(domain.Resource.of(type, id))

    @strawberry.field(
        description="A feature, whether or not any resource has it or it is defined. Null "
        "(with an error) only when a catalog field was asked and the store failed."
    )
    def feature(self, name: Annotated[str, described(FEATURE)]) -> Feature | None:
        return Feature(name=domain.validate_feature(name, "name"))

    @strawberry.field(
        description="Many checks in one store round trip, answered in order (at most 10,000 "
        "items; each counts against the cost limit)."
    )
    async def checks(
        self,
        info: Info,
        items: Annotated[list[CheckInput], described("The questions, answered in this order.")],
    ) -> list[Check] | None:
        # FeaturesAPI validates item by item, so the first bad item is the one reported.
        types = [item.resource.type for item in items]
        ids = [item.resource.id for item in items]
        features = [item.feature for item in items]
        answers = await hot_fields.checks(info.context, types, ids, features)
        return [
            Check(resource=Resource(type=type_, id=id_), feature=feature, enabled=enabled)
            for type_, id_, feature, enabled in zip(types, ids, features, answers, strict=True)
        ]

    @strawberry.field(
        description="For each id, whether (type, id) has each feature: one row per id, one "
        "column per feature, in one store call. The cheap shape for large batches (ids x "
        "features at most 10,000, counted against the cost limit)."
    )
    async def check_matrix(
        self,
        info: Info,
        type: Annotated[str, described(f"The resources' type: {SLUG}.")],
        ids: Annotated[list[str], described("The resources' ids: one row each, in this order.")],
        features: Annotated[list[str], described("The features: one column each, in this order.")],
    ) -> list[list[bool]] | None:
        return await hot_fields.check_matrix(info.context, type, ids, features)

    @strawberry.field(
        description="Who this request acts as, so a client can show only what it may do."
    )
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        return Viewer(
            name=principal.name, scopes=sorted(principal.scopes), anonymous=principal.anonymous
        )

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
    async def revision(self, info: Info) -> Revision | None:
        return Revision(await info.context.api.revision())

    @strawberry.field(
        description="Changes after revision `after`, oldest first: how followers read the log."
    )
    async def changes(
        self,
        info: Info,
        after: Annotated[
            Revision, described("A revision: changes after it (0 for all).")
        ] = NO_REVISION,
        first: Annotated[int, described("How many to return: 1-1000.")] = 100,
    ) -> list[ChangeEvent] | None:
        events = await info.context.api.changes_since(after, limit=first)
        return [ChangeEvent.of(event) for event in events]

    @strawberry.field(description="How current this edge's copy of its upstream is.")
    def sync_status(self, info: Info) -> SyncStatus | None:
        sync = info.context.sync
        if sync is None:
            return None
        status = sync.status()
        return SyncStatus(
            upstream=status.upstream,
            revision=None if status.revision is None else Revision(status.revision),
            upstream_revision=None
            if status.upstream_revision is None
            else Revision(status.upstream_revision),
            lag_seconds=None if status.lag_seconds is None else round(status.lag_seconds, 3),
            connected=status.connected,
            last_synced_at=status.last_synced_at,
            state=SyncState(status.state),
            last_error=status.last_error,
        )

    @strawberry.field(
        description="A page of a snapshot of every assignment, for replicas: `first` "
        "defaults to 1000, at most 10000."
    )
    async def snapshot(
        self,
        info: Info,
        after: Annotated[
            str | None, strawberry.argument(description="The previous page's endCursor.")
        ] = None,
        first: Annotated[
            int, strawberry.argument(description="Assignments per page: 1 to 10000.")
        ] = 1000,
    ) -> SnapshotPage | None:
        start = None if after is None else cursors.ASSIGNMENT.decode(after)
        page = await info.context.api.snapshot_page(start, limit=first)
        rows = page.assignments
        return SnapshotPage(
            revision=Revision(page.revision),
            assignments=[[a.type, a.id, a.feature] for a in rows],
            end_cursor=cursors.ASSIGNMENT.encode(rows[-1]) if rows else after,
            has_next_page=len(rows) == first,
        )


async def _change(
    info: Info, op: str, resource: ResourceInput, feature: str
) -> FeatureChange | InvalidInputError:
    api = info.context.api
    try:
        call = api.add if op == "add" else api.remove
        result = await call((resource.type, resource.id), feature, actor=info.context.actor)
    except InvalidInput as exc:
        return InvalidInputError(field=exc.field, rule=exc.rule, message=exc.message)
    return FeatureChange(
        resource=Resource(type=resource.type, id=resource.id),
        feature=feature,
        changed=result.changed,
        revision=Revision(result.revision),
    )


@strawberry.type(description="What can be changed (every mutation needs the write scope).")
class Mutation(CatalogMutations):
    @strawberry.mutation(
        description="Give a resource a feature. Adding twice is not an error. In strict mode, "
        "the feature must be defined and not archived."
    )
    async def add_feature(
        self,
        info: Info,
        resource: Annotated[ResourceInput, described("The resource.")],
        feature: Annotated[str, described(FEATURE)],
    ) -> FeatureChangeResult | None:
        return await _change(info, "add", resource, feature)

    @strawberry.mutation(
        description="Take a feature from a resource. Removing an absent one is not an error."
    )
    async def remove_feature(
        self,
        info: Info,
        resource: Annotated[ResourceInput, described("The resource.")],
        feature: Annotated[str, described(FEATURE)],
    ) -> FeatureChangeResult | None:
        return await _change(info, "remove", resource, feature)


@strawberry.type(description="What can be followed live (the read scope).")
class Subscription:
    @strawberry.subscription(
        description="Every change after revision `after` (default: from now on), in revision "
        "order with no gaps or repeats: first the backlog from the change log, then live "
        "changes. Optionally only those of one resource `type` and/or one `feature`. To "
        "resume after a disconnect, subscribe again with the last revision received."
    )
    async def feature_changes(
        self,
        info: Info,
        after: Annotated[
            Revision | None,
            strawberry.argument(description="The last revision received (null: from now on)."),
        ] = None,
        type_: Annotated[
            str | None,
            strawberry.argument(
                name="type",
                description="Only changes of this resource type (catalog changes, which name "
                "no resource, are then left out).",
            ),
        ] = None,
        feature: Annotated[
            str | None, strawberry.argument(description="Only changes of this feature.")
        ] = None,
    ) -> AsyncGenerator[ChangeEvent, None]:
        feed = info.context.feed
        if feed is None:
            raise InvalidInput("featureChanges", "unavailable", "no change feed is served here")
        if after is not None and after < 0:
            raise InvalidInput("after", "range", f"after must be >= 0 (got {after})")
        if type_ is not None:
            domain.validate_slug(type_, "type")
        if feature is not None:
            domain.validate_feature(feature)
        async for event in feed.subscribe(after, type=type_, feature=feature):
            yield ChangeEvent.of(event)


class Admission(SchemaExtension):
    """Hands Strawberry the document the gate already parsed and validated.

    The HTTP view asks the gate before executing anything, and both executors run only
    what it admitted; this extension makes Strawberry reuse that work (parse once,
    validate once). Called without a view (``schema.execute`` directly), it asks the
    gate itself, as an anonymous caller with every scope of the open policy.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context.context
        admitted = getattr(context, "admitted", None)
        if admitted is None:
            gate: Gate = self.execution_context.schema.gate  # type: ignore[attr-defined]
            principal = getattr(context, "principal", None) or AuthPolicy.open().anonymous_principal
            decision = gate.admit(
                self.execution_context.query or "",
                self.execution_context.operation_name,
                self.execution_context.variables,
                principal,
            )
            if isinstance(decision, Refused):
                raise decision.errors[0]
            admitted = decision
            if hasattr(context, "admitted"):
                context.admitted = admitted
        self.execution_context.graphql_document = admitted.document
        yield

    def on_validate(self) -> Iterator[None]:
        self.execution_context.pre_execution_errors = []  # the gate validated it
        yield


class FeaturesSchema(strawberry.Schema):
    #: Decides what may run; set by :func:`build_schema`.
    gate: Gate

    @property
    def graphql_schema(self) -> GraphQLSchema:
        """The graphql-core schema Strawberry built, for the gate and the fast path."""
        return self._schema

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged what deserves logging, with the request id.
        return None


def build_schema(*, introspection: bool = True, limits: Limits | None = None) -> FeaturesSchema:
    extensions: list[Any] = [ErrorCodes, Admission]
    schema = FeaturesSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
    )
    schema.gate = Gate(schema.graphql_schema, limits or Limits(), introspection=introspection)
    return schema


def schema_sdl() -> str:
    """The schema in SDL, as committed in ``schema.graphql``."""
    return build_schema().as_str() + "\n"
