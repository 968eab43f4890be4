"""The one parser from an upstream features-gql service's GraphQL answers to domain values.

An edge applies what its upstream sends to a copy that other services read, so nothing
the upstream sends is guessed at: every value is checked here, at the boundary, against
the schema it claims to follow and against the domain's own rules (``Resource.of``,
``validate_feature``), and anything else raises :class:`MalformedUpstream`, which names the
field and the rule in a bounded message. No other exception leaves this module for any
JSON value (a test drives it with arbitrary JSON).

What is refused:

* an op other than the schema's ``ADD``, ``REMOVE``, ``DEFINE``, ``ARCHIVE`` (an edge
  following a newer upstream stops rather than apply a change it does not understand);
* a field missing, null where the schema says it is not, or of another type;
* a resource on a catalog change or none on an assignment change;
* a revision that is not an integer in ``0..MAX_REVISION`` (``1..`` for a change): a
  bool, a float and a string are not revisions, even when they look like one;
* a batch of changes whose revisions do not strictly increase, or that starts at or
  before the revision asked for (:func:`check_sequence`);
* a snapshot page whose assignments are not in strictly increasing order, or a page
  that claims more pages follow with no cursor to read them by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import orjson

from features_gql.domain import (
    ID_MAX,
    MAX_REVISION,
    Assignment,
    ChangeEvent,
    ChangeOp,
    Resource,
    SnapshotPage,
    WriteResult,
    validate_feature,
)
from features_gql.errors import InvalidInput, MalformedUpstream

#: The longest cursor, timestamp or actor taken from an upstream.
CURSOR_MAX: Final = 1024
TEXT_MAX: Final = 64
ACTOR_MAX: Final = 1024

#: The schema's ``ChangeOp`` enum as it travels (its names), to the domain's ops.
OPS: Final[Mapping[str, ChangeOp]] = {
    "ADD": "add",
    "REMOVE": "remove",
    "DEFINE": "define",
    "ARCHIVE": "archive",
}
_ASSIGNMENT_OPS: Final = frozenset({"add", "remove"})


def _shown(value: object) -> str:
    """``value`` for a message, never long: strings cut, containers by type and size."""
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, (dict, list)):
        return f"a {'JSON object' if isinstance(value, dict) else 'list'} of {len(value)}"
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__


def _bad(field: str, rule: str, value: object) -> MalformedUpstream:
    return MalformedUpstream(field, f"{rule} (got {_shown(value)})")


def _object(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "must be a JSON object", value)
    return cast("Mapping[str, Any]", value)


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(field, "must be a list", value)
    return value


def _member(data: Mapping[str, Any], key: str, field: str) -> Any:
    if key not in data:
        raise MalformedUpstream(f"{field}.{key}", "is missing")
    return data[key]


def _string(value: object, field: str, *, maximum: int) -> str:
    if not isinstance(value, str):
        raise _bad(field, "must be a string", value)
    if len(value) > maximum:
        raise MalformedUpstream(field, f"must be at most {maximum} characters (got {len(value)})")
    return value


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(field, "must be true or false", value)
    return value


def revision(value: object, field: str = "revision", *, minimum: int = 0) -> int:
    """``value`` if it is a revision: an integer (not a bool, not a float) in
    ``minimum..MAX_REVISION``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(field, f"must be an integer from {minimum} to {MAX_REVISION}", value)
    if not minimum <= value <= MAX_REVISION:
        raise _bad(field, f"must be from {minimum} to {MAX_REVISION}", value)
    return value


def feature(value: object, field: str) -> str:
    """``value`` if it is a feature name."""
    name = _string(value, field, maximum=TEXT_MAX)
    try:
        return validate_feature(name, field)
    except InvalidInput as exc:
        raise MalformedUpstream(field, exc.message) from None


def _resource(type_: object, id_: object, field: str) -> Resource:
    kind = _string(type_, f"{field}.type", maximum=TEXT_MAX)
    ident = _string(id_, f"{field}.id", maximum=ID_MAX)
    try:
        return Resource.of(kind, ident, field)
    except InvalidInput as exc:
        raise MalformedUpstream(exc.field, exc.message) from None


def change_event(value: object, field: str = "change") -> ChangeEvent:
    """One ``ChangeEvent`` of the schema (``revision op resource { type id } feature actor
    at``) as a domain change."""
    data = _object(value, field)
    number = revision(_member(data, "revision", field), f"{field}.revision", minimum=1)
    wire_op = _member(data, "op", field)
    op = OPS.get(wire_op) if isinstance(wire_op, str) else None
    if op is None:
        raise _bad(f"{field}.op", f"must be one of {', '.join(OPS)}", wire_op)
    raw_resource = _member(data, "resource", field)
    resource: Resource | None = None
    if op in _ASSIGNMENT_OPS:
        if raw_resource is None:
            raise MalformedUpstream(f"{field}.resource", f"is missing on an {op} change")
        where = _object(raw_resource, f"{field}.resource")
        resource = _resource(
            _member(where, "type", f"{field}.resource"),
            _member(where, "id", f"{field}.resource"),
            f"{field}.resource",
        )
    elif raw_resource is not None:
        raise _bad(f"{field}.resource", f"must be null on a {op} change", raw_resource)
    name = feature(_member(data, "feature", field), f"{field}.feature")
    raw_at = _string(_member(data, "at", field), f"{field}.at", maximum=TEXT_MAX)
    try:
        at = datetime.fromisoformat(raw_at)
    except ValueError:
        raise _bad(f"{field}.at", "must be an ISO 8601 date and time", raw_at) from None
    if at.tzinfo is None:
        raise _bad(f"{field}.at", "must have a time zone offset", raw_at)
    raw_actor = _member(data, "actor", field)
    actor = None if raw_actor is None else _string(raw_actor, f"{field}.actor", maximum=ACTOR_MAX)
    return ChangeEvent(number, op, resource, name, at, actor)


def check_sequence(events: Sequence[ChangeEvent], after: int, field: str = "changes") -> None:
    """Refuse a batch that is not strictly increasing from past ``after``."""
    previous = after
    for index, event in enumerate(events):
        if event.revision <= previous:
            raise MalformedUpstream(
                f"{field}[{index}].revision",
                f"revisions must increase: {event.revision} came after {previous}",
            )
        previous = event.revision


def changes(data: Mapping[str, Any], after: int) -> list[ChangeEvent]:
    """The answer to ``changes(after: $after, first: N)``: changes after ``after``, in order."""
    items = _list(_member(data, "changes", "data"), "changes")
    events = [change_event(item, f"changes[{index}]") for index, item in enumerate(items)]
    check_sequence(events, after)
    return events


def store_revision(data: Mapping[str, Any]) -> int:
    """The answer to ``{ revision }``."""
    return revision(_member(data, "revision", "data"), "revision")


def subscription_change(payload: object) -> ChangeEvent:
    """The ``data`` of a ``next`` message of the ``featureChanges`` subscription."""
    data = _object(payload, "payload")
    body = _object(_member(data, "data", "payload"), "payload.data")
    return change_event(_member(body, "featureChanges", "payload.data"), "featureChanges")


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a paged answer: what follows it (``cursor``) and whether anything does."""

    cursor: str | None
    has_next: bool


class Paging:
    """Paging that must make progress: a cursor that comes back while more pages are said
    to follow is refused, or the upstream would keep a follower paging forever."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._seen: set[str] = set()

    def next_cursor(self, page: Page) -> str | None:
        """Where the page after ``page`` starts; None when no page follows it."""
        if not page.has_next:
            return None
        cursor = page.cursor
        assert cursor is not None  # the parser refuses a next page without one
        if cursor in self._seen:
            raise MalformedUpstream(
                self.field,
                "a cursor came back while more pages were said to follow: paging makes no progress",
            )
        self._seen.add(cursor)
        return cursor


def _next_cursor(value: object, has_next: bool, field: str) -> str | None:
    if value is None:
        if has_next:
            raise MalformedUpstream(field, "is missing while more pages follow")
        return None
    return _string(value, field, maximum=CURSOR_MAX)


def snapshot_page(
    data: Mapping[str, Any], after: Assignment | None = None
) -> tuple[SnapshotPage, Page]:
    """The answer to ``snapshot(after:, first:)``. Its assignments must strictly increase,
    and from past ``after`` (the last assignment of the page before): replicas merge
    them with their own in that order, so a page out of order would delete keys."""
    page = _object(_member(data, "snapshot", "data"), "snapshot")
    number = revision(_member(page, "revision", "snapshot"), "snapshot.revision")
    rows = _list(_member(page, "assignments", "snapshot"), "snapshot.assignments")
    assignments: list[Assignment] = []
    previous = after
    for index, row in enumerate(rows):
        field = f"snapshot.assignments[{index}]"
        if not isinstance(row, list) or len(row) != 3:
            raise _bad(field, "must be a list of three strings [type, id, feature]", row)
        resource = _resource(row[0], row[1], field)
        key = Assignment(resource.type, resource.id, feature(row[2], f"{field}.feature"))
        if previous is not None and not previous < key:
            raise MalformedUpstream(field, "assignments must be in strictly increasing order")
        assignments.append(key)
        previous = key
    has_next = _bool(_member(page, "hasNextPage", "snapshot"), "snapshot.hasNextPage")
    cursor = _next_cursor(_member(page, "endCursor", "snapshot"), has_next, "snapshot.endCursor")
    return SnapshotPage(number, assignments), Page(cursor, has_next)


def catalog_page(data: Mapping[str, Any]) -> tuple[list[str], Page]:
    """The answer to ``features(defined: true, archived: false, ...) { edges { node { name
    } } pageInfo { hasNextPage endCursor } }``: feature names."""
    page = _object(_member(data, "features", "data"), "features")
    edges = _list(_member(page, "edges", "features"), "features.edges")
    names: list[str] = []
    for index, edge in enumerate(edges):
        field = f"features.edges[{index}]"
        node = _object(_member(_object(edge, field), "node", field), f"{field}.node")
        names.append(feature(_member(node, "name", f"{field}.node"), f"{field}.node.name"))
    info = _object(_member(page, "pageInfo", "features"), "features.pageInfo")
    has_next = _bool(_member(info, "hasNextPage", "pageInfo"), "features.pageInfo.hasNextPage")
    cursor = _next_cursor(
        _member(info, "endCursor", "pageInfo"), has_next, "features.pageInfo.endCursor"
    )
    return names, Page(cursor, has_next)


def write_answer(data: Mapping[str, Any], field: str) -> WriteResult:
    """The answer to ``addFeature`` or ``removeFeature``: the result, or the upstream's
    :class:`InvalidInput` raised as such (the caller's input broke a rule there)."""
    answer = _member(data, field, "data")
    if answer is None:
        raise MalformedUpstream(field, "the upstream answered the write with nothing")
    answer = _object(answer, field)
    kind = _member(answer, "__typename", field)
    if kind == "InvalidInput":
        return _raise_invalid(answer, field)
    if kind != "FeatureChange":
        raise _bad(f"{field}.__typename", "must be FeatureChange or InvalidInput", kind)
    changed = _bool(_member(answer, "changed", field), f"{field}.changed")
    return WriteResult(changed, revision(_member(answer, "revision", field), f"{field}.revision"))


def _raise_invalid(answer: Mapping[str, Any], field: str) -> WriteResult:
    raise InvalidInput(
        _string(_member(answer, "field", field), f"{field}.field", maximum=TEXT_MAX * 4),
        _string(_member(answer, "rule", field), f"{field}.rule", maximum=TEXT_MAX),
        _string(_member(answer, "message", field), f"{field}.message", maximum=ACTOR_MAX),
    )


def message(text: str | bytes, field: str = "message") -> Mapping[str, Any]:
    """A JSON object as a text (a WebSocket message)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MalformedUpstream(field, "is not JSON") from None
    return _object(value, field)


@dataclass(frozen=True, slots=True)
class GraphQLError:
    """The first of an answer's GraphQL errors: what decides how an edge takes it."""

    code: str
    message: str
    extensions: dict[str, object]

    def trimmed(self) -> tuple[int, int]:
        """``after`` and ``firstRetained`` of a ``RESYNC_REQUIRED`` error."""
        after = self.extensions.get("after", 0)
        return (
            revision(0 if after is None else after, "extensions.after"),
            revision(self.extensions.get("firstRetained"), "extensions.firstRetained"),
        )


def graphql_error(errors: object) -> GraphQLError:
    """The first of an answer's ``errors`` (a message cut to a bounded length)."""
    items = _list(errors, "errors")
    if not items:
        raise MalformedUpstream("errors", "is an empty list")
    first = _object(items[0], "errors[0]")
    raw = first.get("extensions")
    extensions = {} if raw is None else dict(_object(raw, "errors[0].extensions"))
    code = _string(extensions.get("code", "UPSTREAM_ERROR"), "extensions.code", maximum=TEXT_MAX)
    text = first.get("message", "the upstream refused the request")
    if not isinstance(text, str):
        raise _bad("errors[0].message", "must be a string", text)
    return GraphQLError(code, text[:ACTOR_MAX], extensions)
