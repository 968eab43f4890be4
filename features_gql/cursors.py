"""The one codec of opaque positions: page cursors and nodeIds.

A position is packed as unpadded URL-safe base64 of its UTF-8 text. Two texts are used:

* a cursor is JSON: ``{"<kind>": position}`` (feature and revision cursors), or, for the two
  kinds that came before the tag and whose cursors clients may hold, the bare position
  (``[type, id]`` for resources, ``[type, id, feature]`` for snapshot pages); a bare
  position is a JSON array, which no tagged cursor is, so the kinds cannot be mistaken;
* a nodeId is ``<Type>\\x1f<part>\\x1f<part>`` (no part may hold a control character).

Decoding is strict, for a client may send any string: it must be at most
:data:`MAX_CURSOR` characters of the URL-safe alphabet, decode to UTF-8 JSON of the
kind's shape, and be exactly the text the encoder makes of that position (one position,
one cursor). Anything else is :class:`~features_gql.errors.InvalidInput` naming the
argument (``after``, ``nodeId``) under the rule ``cursor`` (``node-id`` for nodeIds).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from features_gql.domain import Assignment, Resource
from features_gql.errors import InvalidInput

__all__ = [
    "ASSIGNMENT",
    "FEATURE",
    "MAX_CURSOR",
    "RESOURCE",
    "REVISION",
    "CursorKind",
    "decode_cursor",
    "decode_key",
    "decode_node_id",
    "decode_snapshot_cursor",
    "encode_cursor",
    "encode_key",
    "encode_node_id",
    "encode_snapshot_cursor",
    "pack",
    "unpack",
]

P = TypeVar("P")

#: The longest cursor or nodeId decoded. The longest this service makes (a snapshot
#: cursor of a 256-character id of 4-byte characters) is about 1,500.
MAX_CURSOR = 4096
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_SEPARATOR = "\x1f"


def pack(text: str) -> str:
    """``text`` as unpadded URL-safe base64 of its UTF-8."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unpack(value: str) -> str | None:
    """The text :func:`pack` made ``value`` of, or None when no text packs to ``value``."""
    if not isinstance(value, str) or len(value) > MAX_CURSOR or len(value) % 4 == 1:
        return None
    if _ALPHABET.fullmatch(value) is None:
        return None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return text if pack(text) == value else None  # unused trailing bits: not ours


def _json(position: object) -> str:
    return json.dumps(position, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class CursorKind(Generic[P]):
    """One kind of cursor: its tag, and how its position is written to JSON and read back.

    ``read`` returns None for a JSON value that is not a position of this kind.
    """

    tag: str
    write: Callable[[P], object]
    read: Callable[[object], P | None]
    #: The older untagged form: the JSON is the position itself (an array).
    bare: bool = False
    #: How the error message names where cursors come from.
    source: str = "this API"

    def encode(self, position: P) -> str:
        written = self.write(position)
        return pack(_json(written if self.bare else {self.tag: written}))

    def decode(self, cursor: str, field: str = "after") -> P:
        found = self._decode(cursor)
        if found is None:
            raise InvalidInput(
                field,
                "cursor",
                f"{field} must be a cursor returned by {self.source} (got {cursor!r:.80})",
            )
        return found

    def _decode(self, cursor: str) -> P | None:
        text = unpack(cursor)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if self.bare:
            if not isinstance(value, list):
                return None
        elif isinstance(value, dict) and len(value) == 1 and self.tag in value:
            value = value[self.tag]
        else:
            return None
        position = self.read(value)
        if position is None:
            return None
        try:
            return position if self.encode(position) == cursor else None
        except (ValueError, TypeError, UnicodeError):  # e.g. a lone surrogate
            return None


def _strings(value: object, count: int) -> list[str] | None:
    if (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(part, str) for part in value)
    ):
        return cast(list[str], value)
    return None


def _resource(value: object) -> Resource | None:
    parts = _strings(value, 2)
    return None if parts is None else Resource(parts[0], parts[1])


def _assignment(value: object) -> Assignment | None:
    parts = _strings(value, 3)
    return None if parts is None else Assignment(parts[0], parts[1], parts[2])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: Resource listings, ordered by (type, id): ``[type, id]``, untagged.
RESOURCE: CursorKind[Resource] = CursorKind(
    "resource", lambda r: [r.type, r.id], _resource, bare=True
)
#: Snapshot pages, ordered by (type, id, feature): ``[type, id, feature]``, untagged.
ASSIGNMENT: CursorKind[Assignment] = CursorKind(
    "assignment", lambda a: [a.type, a.id, a.feature], _assignment, bare=True
)
#: The catalog, ordered by name: ``{"feature": name}``.
FEATURE: CursorKind[str] = CursorKind("feature", str, _text, source="this field")
#: History, by revision: ``{"revision": revision}``.
REVISION: CursorKind[int] = CursorKind("revision", int, _integer, source="this field")

_KEYED: dict[str, CursorKind[str] | CursorKind[int]] = {"feature": FEATURE, "revision": REVISION}


def encode_cursor(resource: Resource) -> str:
    return RESOURCE.encode(resource)


def decode_cursor(cursor: str, field: str = "after") -> Resource:
    return RESOURCE.decode(cursor, field)


def encode_snapshot_cursor(assignment: Assignment) -> str:
    return ASSIGNMENT.encode(assignment)


def decode_snapshot_cursor(cursor: str, field: str = "after") -> Assignment:
    return ASSIGNMENT.decode(cursor, field)


def _keyed(kind: str) -> CursorKind[str | int]:
    known = _KEYED.get(kind)
    if known is not None:
        return cast(CursorKind[str | int], known)
    return CursorKind(kind, lambda v: v, _key, source="this field")


def _key(value: object) -> str | int | None:
    return _text(value) if isinstance(value, str) else _integer(value)


def encode_key(kind: str, value: str | int) -> str:
    """An opaque cursor for a listing keyed by one value (a feature name, a revision)."""
    return _keyed(kind).encode(value)


def decode_key(cursor: str, kind: str, field: str = "after") -> str | int:
    return _keyed(kind).decode(cursor, field)


def encode_node_id(kind: str, *parts: str) -> str:
    return pack(_SEPARATOR.join((kind, *parts)))


def decode_node_id(
    value: str, shapes: dict[str, int], field: str = "nodeId"
) -> tuple[str, list[str]]:
    """The type and key parts of a nodeId whose type is a key of ``shapes`` with that many
    parts; InvalidInput (rule node-id) for anything else."""
    text = unpack(value)
    kind, *parts = ("" if text is None else text).split(_SEPARATOR)
    if shapes.get(kind) != len(parts):
        raise InvalidInput(
            field, "node-id", f"{field} must be a nodeId returned by this API (got {value!r:.80})"
        )
    return kind, parts
