"""GraphQL object and input types. Resolvers are thin: they call FeaturesAPI."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

import strawberry

from features_gql import cursors, domain
from features_gql.graphql import hot_fields, relay
from features_gql.graphql.context import Context
from features_gql.graphql.scalars import Revision

Info = strawberry.Info[Context, None]

#: The rules of names, stated once for every description that mentions them.
SLUG = (
    "a lowercase slug (1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit)"
)
ID_TEXT = (
    "an opaque string of 1-256 characters with no control characters, compared exactly and "
    "ordered by code point"
)
FIRST = "How many to return: 0-1000, 100 when left out."
AFTER = "A cursor from a previous page's pageInfo.endCursor: the page starts after it."


def described(description: str, name: str | None = None) -> object:
    """An argument's description (and, where it differs from the Python name, its GraphQL
    name), for ``Annotated`` arguments of every part of the schema."""
    return strawberry.argument(description=description, name=name)


@strawberry.input(description="A resource: its type (a slug) and its id (an opaque string).")
class ResourceInput:
    type: str = strawberry.field(description=f"The resource's type: {SLUG}.")
    id: str = strawberry.field(description=f"The resource's id: {ID_TEXT}.")


@strawberry.input(description="One question of a batch: does this resource have this feature?")
class CheckInput:
    resource: ResourceInput = strawberry.field(description="The resource asked about.")
    feature: str = strawberry.field(description=f"The feature's name: {SLUG}.")


@strawberry.interface(
    description="An object with a global identity (the Relay Node convention, under the "
    "field name nodeId, since Resource.id is the resource's own id): one nodeId names one "
    "object across every type, so a client cache can key on it. Fetch any of them with "
    "Query.node."
)
class Node:
    @strawberry.field(description="The global, opaque identity of this object.")
    def node_id(self) -> strawberry.ID:  # pragma: no cover - every Node type overrides it
        raise NotImplementedError


#: The nodeId types and how many key parts each has.
NODE_TYPES = {"Resource": 2, "Feature": 1}


def node_id(kind: str, *parts: str) -> strawberry.ID:
    return strawberry.ID(cursors.encode_node_id(kind, *parts))


def decode_node_id(value: str) -> tuple[str, list[str]]:
    """The type and key parts of a nodeId; InvalidInput for anything else."""
    return cursors.decode_node_id(value, NODE_TYPES)


@strawberry.type(
    description="A thing features attach to, identified by (type, id). Normalising client "
    "caches must key it by both (or by nodeId): the same id may exist under several types."
)
class Resource(Node):
    type: str = strawberry.field(description=f"The resource's type: {SLUG}.")
    id: str = strawberry.field(
        description=f"The resource's id within its type: {ID_TEXT}. Not unique across types."
    )

    @classmethod
    def of(cls, resource: domain.Resource) -> Resource:
        return cls(type=resource.type, id=resource.id)

    @strawberry.field(description="The global identity of this resource (see Node).")
    def node_id(self) -> strawberry.ID:
        return node_id("Resource", self.type, self.id)

    @strawberry.field(
        description="The features this resource has, sorted by code point. Every features "
        "field of a request shares one store call."
    )
    async def features(self, info: Info) -> list[str] | None:
        return await info.context.features.load(domain.Resource(self.type, self.id))

    @strawberry.field(description="Whether this resource has the feature.")
    async def has_feature(
        self, info: Info, feature: Annotated[str, described(f"The feature's name: {SLUG}.")]
    ) -> bool | None:
        return await hot_fields.has_feature(info.context, self.type, self.id, feature)

    @strawberry.field(
        description="The changes to this resource's features, newest first (Query.history "
        "for this resource)."
    )
    async def history(
        self,
        info: Info,
        feature: Annotated[
            str | None, described("Only the changes of this feature (a slug).")
        ] = None,
        actor: Annotated[
            str | None, described("Only the changes made by this actor (a token's name).")
        ] = None,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ChangeConnection | None:
        return await change_connection(
            info, (self.type, self.id), feature, actor, first=first, after=after
        )


@relay.edge(Resource, noun="resource")
class ResourceEdge(relay.Edge[Resource]):
    pass


@relay.connection(
    ResourceEdge,
    "A page of resources, Relay-style.",
    plural="resources",
    total_count="How many resources the whole listing holds, when the store keeps that "
    "count (a type's resources, a feature's resources of every type); null otherwise.",
)
class ResourceConnection(relay.Connection[ResourceEdge]):
    pass


@strawberry.type(
    description="A feature: its name, what the catalog says about it, and the resources that "
    "have it. Any slug names a feature, defined or not; defineFeature describes one."
)
class Feature(Node):
    name: str = strawberry.field(description=f"The feature's name: {SLUG}.")
    catalog: strawberry.Private[domain.FeatureInfo | None] = None

    async def _catalog(self, info: Info) -> domain.FeatureInfo:
        if self.catalog is None:
            self.catalog = await info.context.feature_infos.load(self.name)
        return self.catalog

    async def _definition(self, info: Info) -> domain.FeatureDefinition | None:
        return (await self._catalog(info)).definition

    @strawberry.field(description="The global identity of this feature (see Node).")
    def node_id(self) -> strawberry.ID:
        return node_id("Feature", self.name)

    @strawberry.field(description="Whether the feature has a definition (archived or not).")
    async def defined(self, info: Info) -> bool:
        return (await self._catalog(info)).defined

    @strawberry.field(description="What the feature is for; null when not given.")
    async def description(self, info: Info) -> str | None:
        definition = await self._definition(info)
        return None if definition is None else definition.description

    @strawberry.field(
        description="Who looks after the feature (a team, a person); null when not given."
    )
    async def owner(self, info: Info) -> str | None:
        definition = await self._definition(info)
        return None if definition is None else definition.owner

    @strawberry.field(description="What kind of flag this is; null when not given.")
    async def kind(self, info: Info) -> FeatureKind | None:
        definition = await self._definition(info)
        return (
            None if definition is None or definition.kind is None else FeatureKind(definition.kind)
        )

    @strawberry.field(description="When the feature is due to be cleaned up; null for never.")
    async def expires_at(self, info: Info) -> datetime | None:
        definition = await self._definition(info)
        return None if definition is None else definition.expires_at

    @strawberry.field(description="Whether expiresAt has passed (judged when asked).")
    async def expired(self, info: Info) -> bool:
        return (await self._catalog(info)).expired(datetime.now(UTC))

    @strawberry.field(
        description="Whether the feature was retired with archiveFeature. It keeps its "
        "assignments; strict mode refuses new ones."
    )
    async def archived(self, info: Info) -> bool:
        return (await self._catalog(info)).archived

    @strawberry.field(description="When the feature was archived; null unless archived.")
    async def archived_at(self, info: Info) -> datetime | None:
        definition = await self._definition(info)
        return None if definition is None else definition.archived_at

    @strawberry.field(description="When the feature was first defined; null if never defined.")
    async def created_at(self, info: Info) -> datetime | None:
        definition = await self._definition(info)
        return None if definition is None else definition.created_at

    @strawberry.field(
        description="When the definition last changed (define or archive); null if never defined."
    )
    async def updated_at(self, info: Info) -> datetime | None:
        definition = await self._definition(info)
        return None if definition is None else definition.updated_at

    @strawberry.field(description="How many resources have this feature (a stored count).")
    async def resource_count(self, info: Info) -> int:
        return (await self._catalog(info)).resource_count

    @strawberry.field(description="Resources with this feature, ordered by (type, id).")
    async def resources(
        self,
        info: Info,
        type_: Annotated[
            str | None,
            strawberry.argument(name="type", description="Only resources of this type (a slug)."),
        ] = None,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ResourceConnection | None:
        page = await info.context.api.resources_with(
            self.name, type=type_, first=first, after=after
        )

        async def count() -> int | None:
            return (await self._catalog(info)).resource_count

        return _resource_page(page, after, count if type_ is None else None)

    @strawberry.field(
        description="The changes of this feature, newest first: its assignments, and its "
        "definitions and archiving (Query.history for this feature)."
    )
    async def history(
        self,
        info: Info,
        resource: Annotated[
            ResourceInput | None, described("Only the changes of this resource.")
        ] = None,
        actor: Annotated[
            str | None, described("Only the changes made by this actor (a token's name).")
        ] = None,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ChangeConnection | None:
        asked = None if resource is None else (resource.type, resource.id)
        return await change_connection(info, asked, self.name, actor, first=first, after=after)


@strawberry.type(description="The answer to one CheckInput, in the order asked.")
class Check:
    resource: Resource = strawberry.field(description="The resource asked about.")
    feature: str = strawberry.field(description="The feature asked about.")
    enabled: bool = strawberry.field(description="Whether the resource has the feature.")


@strawberry.type(description="The result of an add or remove that was carried out.")
class FeatureChange:
    resource: Resource = strawberry.field(description="The resource changed (or not).")
    feature: str = strawberry.field(description="The feature added or removed.")
    changed: bool = strawberry.field(
        description="False when the resource already had (add) or lacked (remove) the feature."
    )
    revision: Revision = strawberry.field(
        description="The revision of this change; when nothing changed, the store's revision "
        "after the request."
    )


@strawberry.type(name="InvalidInput", description="An argument broke a rule; nothing was changed.")
class InvalidInputError:
    field: str = strawberry.field(
        description="The argument at fault, e.g. resource.type or items[3].feature."
    )
    rule: str = strawberry.field(
        description="The rule it broke: slug, length, printable, range, cursor, batch-size, "
        "kind, timezone, or undefined (strict mode)."
    )
    message: str = strawberry.field(description="What is wrong, for a person to read.")


FeatureChangeResult = Annotated[
    FeatureChange | InvalidInputError,
    strawberry.union(
        "FeatureChangeResult",
        description="What addFeature or removeFeature did, or why it was refused.",
    ),
]


@strawberry.enum(description="What a change did.")
class ChangeOp(enum.Enum):
    ADD = strawberry.enum_value("add", description="A resource was given a feature.")
    REMOVE = strawberry.enum_value("remove", description="A feature was taken from a resource.")
    DEFINE = strawberry.enum_value(
        "define", description="A feature's definition was created, changed or restored."
    )
    ARCHIVE = strawberry.enum_value("archive", description="A feature was archived.")


@strawberry.type(description="A change that took effect, from the store's change log.")
class ChangeEvent:
    revision: Revision = strawberry.field(
        description="Its place in the change log: store-wide and strictly increasing."
    )
    op: ChangeOp = strawberry.field(description="What the change did.")
    resource: Resource | None = strawberry.field(
        description="The resource changed; null for catalog changes (DEFINE, ARCHIVE)."
    )
    feature: str = strawberry.field(description="The feature added, removed, defined or archived.")
    at: datetime = strawberry.field(description="When the store applied it.")
    actor: str | None = strawberry.field(
        description="Who made it: the token's name (anonymous without a token); null when the "
        "change came through the Python API without an actor."
    )

    @classmethod
    def of(cls, event: domain.ChangeEvent) -> ChangeEvent:
        return cls(
            revision=Revision(event.revision),
            op=ChangeOp(event.op),
            resource=None if event.resource is None else Resource.of(event.resource),
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
    name: str = strawberry.field(description="The store, as in logs and metrics (e.g. sqlite).")
    up: bool = strawberry.field(description="Whether it answered in time.")
    latency_ms: float = strawberry.field(description="How long the probe took, in milliseconds.")
    reason: str | None = strawberry.field(
        description="Why the store is not up: timeout, unavailable or error."
    )


@strawberry.type(description="The service's health.")
class Health:
    status: str = strawberry.field(
        description="The status: ok, or degraded when the store is not up."
    )
    store: StoreHealth = strawberry.field(description="The live probe of the store.")


# -- catalog, listings, history and bulk --------------------------------------------------


@strawberry.enum(description="What a feature flag is for; it decides how long it should live.")
class FeatureKind(enum.Enum):
    RELEASE = strawberry.enum_value(
        "release", description="Ships work in progress; short-lived, removed once rolled out."
    )
    OPS = strawberry.enum_value(
        "ops", description="An operational switch (kill switch, load shedding); long-lived."
    )
    EXPERIMENT = strawberry.enum_value(
        "experiment", description="Splits resources to compare variants; lives for the test."
    )
    PERMISSION = strawberry.enum_value(
        "permission", description="Grants capabilities to some resources; long-lived."
    )


@strawberry.input(
    description="A feature's definition. Fields left out keep their value (null on a new "
    "definition); fields given as null are cleared."
)
class FeatureDefinitionInput:
    name: str = strawberry.field(description=f"The feature's name: {SLUG}.")
    description: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="What the feature is for: at most 2000 characters; line breaks allowed, "
        "no other control characters.",
    )
    owner: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Who looks after it: at most 200 characters, no control characters.",
    )
    kind: FeatureKind | None = strawberry.field(
        default=strawberry.UNSET, description="What kind of flag it is."
    )
    expires_at: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description="When it is due to be cleaned up, with a time zone (e.g. "
        "2030-01-31T00:00:00Z), from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z in UTC; "
        "kept to the millisecond.",
    )


@strawberry.type(description="A resource type in use.")
class ResourceType:
    name: str = strawberry.field(description=f"The type's name: {SLUG}.")
    resource_count: int = strawberry.field(
        description="How many resources of this type have at least one feature."
    )

    @strawberry.field(description="Its resources that have a feature, ordered by id.")
    async def resources(
        self,
        info: Info,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ResourceConnection | None:
        return await resource_connection(info, self.name, first, after)


@relay.edge(Feature, noun="feature")
class FeatureEdge(relay.Edge[Feature]):
    pass


@relay.connection(
    FeatureEdge, "A page of the catalog, ordered by name, Relay-style.", plural="features"
)
class FeatureConnection(relay.Connection[FeatureEdge]):
    pass


@relay.edge(ChangeEvent, noun="change", where="history")
class ChangeEdge(relay.Edge[ChangeEvent]):
    pass


@relay.connection(
    ChangeEdge,
    "A page of history, newest first, Relay-style.",
    plural="changes",
    total_count="How many changes the whole history holds: given for the unfiltered "
    "history (the store's revision), null for a filtered one.",
)
class ChangeConnection(relay.Connection[ChangeEdge]):
    pass


@strawberry.type(description="What defineFeature or archiveFeature did.")
class FeatureDefinitionChange:
    feature: Feature = strawberry.field(description="The feature as it is now.")
    changed: bool = strawberry.field(
        description="False when the definition already said this (or the feature was not "
        "defined, or already archived, for archiveFeature)."
    )
    revision: Revision = strawberry.field(
        description="The revision of this change; when nothing changed, the store's revision."
    )


FeatureDefinitionResult = Annotated[
    FeatureDefinitionChange | InvalidInputError,
    strawberry.union(
        "FeatureDefinitionResult",
        description="What defineFeature or archiveFeature did, or why it was refused.",
    ),
]


@strawberry.type(
    description="What addFeatures or removeFeatures did: one FeatureChange per item, in the "
    "order given. Every item that changed has its own revision, in that order."
)
class BulkChange:
    changes: list[FeatureChange] = strawberry.field(description="One result per item, in order.")
    changed_count: int = strawberry.field(description="How many items changed something.")
    revision: Revision = strawberry.field(description="The store's revision after the request.")


BulkChangeResult = Annotated[
    BulkChange | InvalidInputError,
    strawberry.union(
        "BulkChangeResult",
        description="What addFeatures or removeFeatures did, or the first item that broke a "
        "rule (then nothing was changed).",
    ),
]


@strawberry.type(description="What setFeatures did.")
class FeaturesSet:
    resource: Resource = strawberry.field(description="The resource whose features were set.")
    features: list[str] = strawberry.field(description="Its features now, sorted.")
    removed: list[str] = strawberry.field(
        description="The features taken away, sorted; their changes come first in the log."
    )
    added: list[str] = strawberry.field(description="The features given, sorted.")
    revision: Revision = strawberry.field(description="The store's revision after the request.")


SetFeaturesResult = Annotated[
    FeaturesSet | InvalidInputError,
    strawberry.union(
        "SetFeaturesResult",
        description="What setFeatures did, or why it was refused (then nothing was changed).",
    ),
]


async def change_connection(
    info: Info,
    resource: tuple[str, str] | None,
    feature: str | None,
    actor: str | None,
    *,
    first: int | None,
    after: str | None,
) -> ChangeConnection:
    api = info.context.api
    page = await api.history(
        resource=resource, feature=feature, actor=actor, first=first, after=after
    )
    edges = [
        ChangeEdge(cursor=cursors.REVISION.encode(event.revision), node=ChangeEvent.of(event))
        for event in page.changes
    ]
    unfiltered = resource is None and feature is None and actor is None
    return relay.page(
        ChangeConnection,
        edges,
        after=after,
        has_next_page=page.has_next_page,
        end_cursor=page.end_cursor,
        count=api.revision if unfiltered else None,
    )


async def resource_connection(
    info: Info, type: str, first: int | None, after: str | None
) -> ResourceConnection:
    api = info.context.api
    page = await api.list_resources(type, first=first, after=after)

    async def count() -> int | None:
        return await api.resource_count(type)

    return _resource_page(page, after, count)


def _resource_page(
    page: domain.ResourcePage, after: str | None, count: relay.Count | None
) -> ResourceConnection:
    edges = [
        ResourceEdge(cursor=cursors.RESOURCE.encode(r), node=Resource.of(r)) for r in page.resources
    ]
    return relay.page(
        ResourceConnection,
        edges,
        after=after,
        has_next_page=page.has_next_page,
        end_cursor=page.end_cursor,
        count=count,
    )


# -- snapshots and feed -------------------------------------------------------------------


@strawberry.type(
    description="A page of a snapshot of every assignment. Every change up to `revision` is "
    "in it; a replica keeps the revision of its first page, reads every page, then follows "
    "the changes after that revision."
)
class SnapshotPage:
    revision: Revision = strawberry.field(
        description="Every change up to this revision is in the snapshot."
    )
    assignments: list[list[str]] = strawberry.field(
        description="[type, id, feature] of each assignment, ordered by type, id, feature "
        "(code point order)."
    )
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool = strawberry.field(description="Whether another page may follow.")


@strawberry.enum(
    description="What an edge's follower is doing. In every state but "
    "CONNECTING the edge answers reads from its copy."
)
class SyncState(enum.Enum):
    CONNECTING = strawberry.enum_value(
        "connecting", description="It has not reached the upstream yet."
    )
    FOLLOWING = strawberry.enum_value(
        "following", description="Connected, following the upstream's changes, no error."
    )
    UNREACHABLE = strawberry.enum_value(
        "unreachable", description="The upstream cannot be reached or cannot answer."
    )
    REFUSED = strawberry.enum_value("refused", description="The upstream refuses the edge.")
    MALFORMED = strawberry.enum_value(
        "malformed",
        description="The upstream answered something the edge refused to apply (an unknown "
        "op, a field missing or of the wrong type, a revision out of range or out of order, "
        "paging that makes no progress): nothing of it was applied; lastError says what. "
        "The edge asks again with backoff and follows once the upstream answers sanely.",
    )
    FAILING = strawberry.enum_value(
        "failing", description="The edge's own store failed (or a bug): see lastError."
    )


@strawberry.type(
    description="How current an edge's copy of its upstream is (null on a service that "
    "follows no upstream)."
)
class SyncStatus:
    upstream: str = strawberry.field(description="The upstream's GraphQL endpoint.")
    revision: Revision | None = strawberry.field(
        description="The upstream revision the copy reflects; null before the first sync."
    )
    upstream_revision: Revision | None = strawberry.field(
        description="The upstream's revision, as last heard."
    )
    lag_seconds: float | None = strawberry.field(
        description="How far the copy may be behind: 0 while connected and caught up, else "
        "the seconds since it last was."
    )
    connected: bool = strawberry.field(
        description="Whether it follows the upstream now, with no error (state FOLLOWING)."
    )
    state: SyncState = strawberry.field(description="What the follower is doing.")
    last_error: str | None = strawberry.field(
        description="Why it does not follow the upstream now; null while it does."
    )
    last_synced_at: datetime | None = strawberry.field(
        description="When the copy was last known to be current."
    )
