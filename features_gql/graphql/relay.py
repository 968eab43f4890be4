"""Relay connections, written once: ``PageInfo``, the generic ``Edge`` and ``Connection``,
the decorators that name and describe a concrete one, and :func:`page`, which builds a page.

A concrete connection is two small classes::

    @relay.edge(Resource, noun="resource")
    class ResourceEdge(relay.Edge[Resource]):
        pass

    @relay.connection(ResourceEdge, "A page of resources, Relay-style.", plural="resources")
    class ResourceConnection(relay.Connection[ResourceEdge]):
        pass

(``strawberry.relay`` is not used: its types carry other names and descriptions, and its
``Node.id`` would clash with ``Resource.id``; schema.graphql stays as it was.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import GenericAlias
from typing import Any, Generic, TypeVar

import strawberry

NodeT = TypeVar("NodeT")
EdgeT = TypeVar("EdgeT")
E = TypeVar("E", bound="Edge[Any]")
C = TypeVar("C", bound="Connection[Any]")

Count = Callable[[], Awaitable[int | None]]


@strawberry.type(
    description="Where a page of a connection stands. Pages run forward only: ask for the "
    "next one with after: endCursor."
)
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="Whether more items follow this page (also answered for first: 0)."
    )
    has_previous_page: bool = strawberry.field(
        description="Whether this page was asked for after a cursor."
    )
    start_cursor: str | None = strawberry.field(
        description="The cursor of the page's first item; null for an empty page."
    )
    end_cursor: str | None = strawberry.field(
        description="The cursor of the page's last item, for the next page's after; null for "
        "an empty page."
    )


@strawberry.type
class Edge(Generic[NodeT]):
    """An item of a page and its cursor; name and describe a concrete one with :func:`edge`."""

    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[EdgeT]):
    """A page of edges; name and describe a concrete one with :func:`connection`.

    ``count``, when given, answers ``totalCount`` (on connections declared with one).
    """

    edges: list[EdgeT]
    page_info: PageInfo
    count: strawberry.Private[Count | None] = None


def _fields(cls: type, fields: dict[str, tuple[object, object]]) -> None:
    """Give ``cls`` its GraphQL fields (type and strawberry.field), in this order."""
    cls.__annotations__ = {name: kind for name, (kind, _) in fields.items()}
    for name, (_, field) in fields.items():
        setattr(cls, name, field)


def edge(node: type, *, noun: str, where: str = "listing") -> Callable[[type[E]], type[E]]:
    """Make ``cls`` (a subclass of ``Edge[node]``) the GraphQL type of the edges of ``noun``s,
    named after the class."""

    def make(cls: type[E]) -> type[E]:
        _fields(
            cls,
            {
                "cursor": (
                    str,
                    strawberry.field(description=f"Where this {noun} stands in the {where}."),
                ),
                "node": (node, strawberry.field(description=f"The {noun}.")),
            },
        )
        return strawberry.type(cls, description=f"A {noun} in a page, with its cursor.")

    return make


async def _total_count(root: Connection[Any]) -> int | None:
    return None if root.count is None else await root.count()


def connection(
    edge: type, description: str, *, plural: str, total_count: str | None = None
) -> Callable[[type[C]], type[C]]:
    """Make ``cls`` (a subclass of ``Connection[edge]``) the GraphQL type of a page of
    ``plural``, named after the class; with a ``totalCount`` field described by
    ``total_count`` when given."""

    def make(cls: type[C]) -> type[C]:
        fields: dict[str, tuple[object, object]] = {
            "edges": (
                GenericAlias(list, (edge,)),
                strawberry.field(description=f"The {plural} of this page."),
            ),
            "page_info": (PageInfo, strawberry.field(description="Where this page stands.")),
        }
        _fields(cls, fields)
        if total_count is not None:
            cls.total_count = strawberry.field(  # type: ignore[attr-defined]
                resolver=_total_count, description=total_count
            )
        return strawberry.type(cls, description=description)

    return make


def page(
    cls: type[C],
    edges: list[Any],
    *,
    after: str | None,
    has_next_page: bool,
    end_cursor: str | None,
    count: Count | None = None,
) -> C:
    """A page of ``cls`` holding ``edges``, asked for after the cursor ``after``."""
    return cls(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next_page,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=end_cursor,
        ),
        count=count,
    )
