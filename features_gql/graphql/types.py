"""GraphQL object and input types. Resolvers are thin: they call FeaturesAPI."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import strawberry

from features_gql import domain
from features_gql.graphql import hot_fields
from features_gql.graphql.context import Context

Info = strawberry.Info[Context, None]


@strawberry.input(description="A resource: its type (a slug) and its id (an opaque string).")
class ResourceInput:
    type: str
    id: str


@strawberry.input(description="One question of a batch: does this resource have this feature?")
class CheckInput:
    resource: ResourceInput
    feature: str


@strawberry.type(description="A thing features attach to, identified by (type, id).")
class Resource:
    type: str
    id: str

    @classmethod
    def of(cls, resource: domain.Resource) -> Resource:
        return cls(type=resource.type, id=resource.id)

    @strawberry.field(description="The features this resource has, sorted.")
    async def features(self, info: Info) -> list[str] | None:
        return await info.context.features.load(domain.Resource(self.type, self.id))

    @strawberry.field(description="Whether this resource has the feature.")
    async def has_feature(self, info: Info, feature: str) -> bool | None:
        return await hot_fields.has_feature(info.context, self.type, self.id, feature)


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class ResourceEdge:
    cursor: str
    node: Resource


@strawberry.type(description="A page of resources, Relay-style.")
class ResourceConnection:
    edges: list[ResourceEdge]
    page_info: PageInfo


@strawberry.type(description="A feature name, and the resources that have it.")
class Feature:
    name: str

    @strawberry.field(
        description="Resources with this feature ordered by (type, id); first defaults to 100, "
        "at most 1000."
    )
    async def resources(
        self,
        info: Info,
        type_: Annotated[str | None, strawberry.argument(name="type")] = None,
        first: int | None = None,
        after: str | None = None,
    ) -> ResourceConnection | None:
        from features_gql.api import encode_cursor

        page = await info.context.api.resources_with(
            self.name, type=type_, first=first, after=after
        )
        edges = [ResourceEdge(cursor=encode_cursor(r), node=Resource.of(r)) for r in page.resources]
        return ResourceConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=page.end_cursor,
            ),
        )


@strawberry.type(description="The answer to one CheckInput, in the order asked.")
class Check:
    resource: Resource
    feature: str
    enabled: bool


@strawberry.type(description="The result of an add or remove that was carried out.")
class FeatureChange:
    resource: Resource
    feature: str
    changed: bool = strawberry.field(
        description="False when the resource already had (add) or lacked (remove) the feature."
    )
    revision: int = strawberry.field(description="The store's revision after this change.")


@strawberry.type(name="InvalidInput", description="An argument broke a rule; nothing was changed.")
class InvalidInputError:
    field: str = strawberry.field(description="The argument at fault, e.g. resource.type.")
    rule: str = strawberry.field(description="The rule it broke: slug, length, printable...")
    message: str


FeatureChangeResult = Annotated[
    FeatureChange | InvalidInputError, strawberry.union("FeatureChangeResult")
]


@strawberry.enum
class ChangeOp(enum.Enum):
    ADD = "add"
    REMOVE = "remove"


@strawberry.type(description="A change that took effect, from the store's change log.")
class ChangeEvent:
    revision: int
    op: ChangeOp
    resource: Resource
    feature: str
    at: datetime
    actor: str | None

    @classmethod
    def of(cls, event: domain.ChangeEvent) -> ChangeEvent:
        return cls(
            revision=event.revision,
            op=ChangeOp(event.op),
            resource=Resource.of(event.resource),
            feature=event.feature,
            at=event.at,
            actor=event.actor,
        )


@strawberry.type(description="Who a request acts as: a token, or anonymous.")
class Viewer:
    name: str = strawberry.field(
        description="The token's name (recorded as the actor of its changes), or anonymous."
    )
    scopes: list[str] = strawberry.field(
        description="What it may do, sorted: read (queries), write (mutations), admin."
    )
    anonymous: bool = strawberry.field(description="True when the request carried no token.")


@strawberry.type(description="Whether the store answers a cheap probe within a short deadline.")
class StoreHealth:
    name: str
    up: bool
    latency_ms: float
    reason: str | None = strawberry.field(
        description="Why the store is not up: timeout, unavailable or error."
    )


@strawberry.type
class Health:
    status: str = strawberry.field(description="ok, or degraded when the store is not up.")
    store: StoreHealth


# -- snapshots and feed -------------------------------------------------------------------


@strawberry.type(
    description="A page of a snapshot of every assignment. Every change up to `revision` is "
    "in it; a replica keeps the revision of its first page, reads every page, then follows "
    "the changes after that revision."
)
class SnapshotPage:
    revision: int
    assignments: list[list[str]] = strawberry.field(
        description="[type, id, feature] of each assignment, ordered by type, id, feature "
        "(code point order)."
    )
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool


@strawberry.type(
    description="How current an edge's copy of its upstream is (null on a service that "
    "follows no upstream)."
)
class SyncStatus:
    upstream: str = strawberry.field(description="The upstream's GraphQL endpoint.")
    revision: int | None = strawberry.field(
        description="The upstream revision the copy reflects; null before the first sync."
    )
    upstream_revision: int | None = strawberry.field(
        description="The upstream's revision, as last heard."
    )
    lag_seconds: float | None = strawberry.field(
        description="How far the copy may be behind: 0 while connected and caught up, else "
        "the seconds since it last was."
    )
    connected: bool
    last_synced_at: datetime | None = strawberry.field(
        description="When the copy was last known to be current."
    )
