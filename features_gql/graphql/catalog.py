"""The catalog, listings, history and bulk changes: fields the Query and Mutation roots
take from here (see schema.py). Resolvers are thin: they call FeaturesAPI."""

from __future__ import annotations

from typing import Annotated, cast

import strawberry

from features_gql import cursors, domain
from features_gql.errors import InvalidInput
from features_gql.graphql import relay
from features_gql.graphql.scalars import Revision
from features_gql.graphql.types import (
    AFTER,
    FIRST,
    SLUG,
    BulkChange,
    BulkChangeResult,
    ChangeConnection,
    CheckInput,
    Feature,
    FeatureChange,
    FeatureConnection,
    FeatureDefinitionChange,
    FeatureDefinitionInput,
    FeatureDefinitionResult,
    FeatureEdge,
    FeatureKind,
    FeaturesSet,
    Info,
    InvalidInputError,
    Node,
    Resource,
    ResourceConnection,
    ResourceInput,
    ResourceType,
    SetFeaturesResult,
    change_connection,
    decode_node_id,
    described,
    resource_connection,
)


def _invalid(exc: InvalidInput) -> InvalidInputError:
    return InvalidInputError(field=exc.field, rule=exc.rule, message=exc.message)


@strawberry.type
class CatalogQueries:
    @strawberry.field(
        description="The catalog: every feature that is defined or that some resource has, "
        "ordered by name. Archived features are left out unless archived is true or null."
    )
    async def features(
        self,
        info: Info,
        kind: Annotated[FeatureKind | None, described("Only features of this kind.")] = None,
        search: Annotated[
            str | None,
            described(
                "Only features whose name or description contains this text (case-insensitive, "
                "at most 100 characters). Reads the catalog, not the assignments."
            ),
        ] = None,
        expired: Annotated[
            bool | None,
            described("true: only features past their expiresAt; false: only the others."),
        ] = None,
        archived: Annotated[
            bool | None,
            described("false (the default): live features; true: archived ones; null: both."),
        ] = False,
        defined: Annotated[
            bool | None,
            described("true: only defined features; false: only assigned, never defined ones."),
        ] = None,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> FeatureConnection | None:
        page = await info.context.api.list_features(
            kind=None if kind is None else cast(str, kind.value),
            search=search,
            expired=expired,
            archived=archived,
            defined=defined,
            first=first,
            after=after,
        )
        edges = [
            FeatureEdge(cursor=cursors.FEATURE.encode(f.name), node=Feature(name=f.name, catalog=f))
            for f in page.features
        ]
        return relay.page(
            FeatureConnection,
            edges,
            after=after,
            has_next_page=page.has_next_page,
            end_cursor=page.end_cursor,
        )

    @strawberry.field(
        description="The resource types some resource with a feature has, ordered by name, "
        "each with its number of such resources."
    )
    async def resource_types(
        self,
        info: Info,
        first: Annotated[int, described("How many to return: 0-1000.")] = 1000,
        after: Annotated[
            str | None, described("A type's name: the list starts after it (for the next part).")
        ] = None,
    ) -> list[ResourceType] | None:
        found = await info.context.api.resource_types(first=first, after=after)
        return [ResourceType(name=t.name, resource_count=t.resource_count) for t in found]

    @strawberry.field(description="The resources of a type that have a feature, ordered by id.")
    async def resources(
        self,
        info: Info,
        type_: Annotated[str, described(f"The resources' type: {SLUG}.", name="type")],
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ResourceConnection | None:
        return await resource_connection(info, type_, first, after)

    @strawberry.field(
        description="The change log, newest first, filtered by resource, feature and actor "
        "(each served by an index). Without filters, every change; `changes` reads the same "
        "log oldest first, for followers."
    )
    async def history(
        self,
        info: Info,
        resource: Annotated[
            ResourceInput | None, described("Only the changes of this resource.")
        ] = None,
        feature: Annotated[
            str | None,
            described("Only the changes of this feature (its assignments and its definition)."),
        ] = None,
        actor: Annotated[
            str | None, described("Only the changes made by this actor (a token's name).")
        ] = None,
        first: Annotated[int | None, described(FIRST)] = None,
        after: Annotated[str | None, described(AFTER)] = None,
    ) -> ChangeConnection | None:
        asked = None if resource is None else (resource.type, resource.id)
        return await change_connection(info, asked, feature, actor, first=first, after=after)

    @strawberry.field(description="The Resource or Feature with this nodeId.")
    def node(
        self, node_id: Annotated[strawberry.ID, described("A nodeId returned by this API.")]
    ) -> Node | None:
        kind, parts = decode_node_id(node_id)
        if kind == "Resource":
            return Resource.of(domain.Resource.of(parts[0], parts[1], "nodeId"))
        return Feature(name=domain.validate_feature(parts[0], "nodeId"))


@strawberry.type
class CatalogMutations:
    @strawberry.mutation(
        description="Create or update a feature's definition (fields left out keep their "
        "value). Defining an archived feature brings it back. Logged as a DEFINE change."
    )
    async def define_feature(
        self,
        info: Info,
        input: Annotated[FeatureDefinitionInput, described("The definition.")],
    ) -> FeatureDefinitionResult | None:
        def given(value: object) -> object:
            return domain.KEEP if value is strawberry.UNSET else value

        kind = given(input.kind)
        try:
            result = await info.context.api.define(
                input.name,
                description=given(input.description),  # type: ignore[arg-type]
                owner=given(input.owner),  # type: ignore[arg-type]
                kind=cast(str, kind.value) if isinstance(kind, FeatureKind) else kind,  # type: ignore[arg-type]
                expires_at=given(input.expires_at),  # type: ignore[arg-type]
                actor=info.context.actor,
            )
        except InvalidInput as exc:
            return _invalid(exc.at("input"))
        return _definition_change(result)

    @strawberry.mutation(
        description="Retire a feature: it stays in the catalog (archived: true) and keeps its "
        "assignments; strict mode refuses new ones. Logged as an ARCHIVE change."
    )
    async def archive_feature(
        self, info: Info, name: Annotated[str, described(f"The feature's name: {SLUG}.")]
    ) -> FeatureDefinitionResult | None:
        try:
            result = await info.context.api.archive(name, actor=info.context.actor)
        except InvalidInput as exc:
            return _invalid(exc)
        return _definition_change(result)

    @strawberry.mutation(
        description="Give many resources many features in one store round trip, all or "
        "nothing where the store can (at most 10,000 items; each counts against the cost "
        "limit). In strict mode, an undefined or archived feature refuses the whole request."
    )
    async def add_features(
        self,
        info: Info,
        items: Annotated[list[CheckInput], described("What to add: (resource, feature) pairs.")],
    ) -> BulkChangeResult | None:
        return await _bulk(info, "add", items)

    @strawberry.mutation(
        description="Take many features from many resources in one store round trip (at most "
        "10,000 items; each counts against the cost limit)."
    )
    async def remove_features(
        self,
        info: Info,
        items: Annotated[list[CheckInput], described("What to remove: (resource, feature) pairs.")],
    ) -> BulkChangeResult | None:
        return await _bulk(info, "remove", items)

    @strawberry.mutation(
        description="Make these the resource's features, in one store round trip: the others "
        "are removed, then the missing ones added, each change under its own revision."
    )
    async def set_features(
        self,
        info: Info,
        resource: Annotated[ResourceInput, described("The resource.")],
        features: Annotated[
            list[str],
            described(f"Its features from now on (each {SLUG}; at most 10,000; may be empty)."),
        ],
    ) -> SetFeaturesResult | None:
        try:
            result = await info.context.api.set_features(
                (resource.type, resource.id), features, actor=info.context.actor
            )
        except InvalidInput as exc:
            return _invalid(exc)
        return FeaturesSet(
            resource=Resource(type=resource.type, id=resource.id),
            features=sorted(set(features)),
            removed=result.removed,
            added=result.added,
            revision=Revision(result.revision),
        )


def _definition_change(result: domain.DefinitionResult) -> FeatureDefinitionChange:
    return FeatureDefinitionChange(
        feature=Feature(name=result.feature.name, catalog=result.feature),
        changed=result.changed,
        revision=Revision(result.revision),
    )


async def _bulk(info: Info, op: str, items: list[CheckInput]) -> BulkChange | InvalidInputError:
    api = info.context.api
    asked = [((item.resource.type, item.resource.id), item.feature) for item in items]
    try:
        if op == "add":
            result = await api.add_many(asked, actor=info.context.actor)
        else:
            result = await api.remove_many(asked, actor=info.context.actor)
    except InvalidInput as exc:
        return _invalid(exc)
    changes = [
        FeatureChange(
            resource=Resource(type=type_, id=id_),
            feature=feature,
            changed=revision is not None,
            revision=Revision(result.revision if revision is None else revision),
        )
        for ((type_, id_), feature), revision in zip(asked, result.revisions, strict=True)
    ]
    return BulkChange(
        changes=changes,
        changed_count=sum(change.changed for change in changes),
        revision=Revision(result.revision),
    )
