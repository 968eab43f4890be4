"""The domain: resources, feature names, change events, and the rules that names follow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from features_gql.errors import InvalidInput

SLUG_MAX = 64
ID_MAX = 256

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Control characters (C0, DEL, C1), lone surrogates and the Unicode line/paragraph
# separators: anything that would break a log line or a terminal.
_FORBIDDEN_IN_ID = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

SLUG_RULE = (
    "a lowercase slug: 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
)
ID_RULE = "1-256 characters with no control characters"


def validate_slug(value: str, field: str) -> str:
    """Return ``value`` if it is a slug, else raise :class:`InvalidInput` naming ``field``."""
    if _SLUG.fullmatch(value) is None:
        raise InvalidInput(field, "slug", f"{field} must be {SLUG_RULE} (got {value!r:.80})")
    return value


def validate_id(value: str, field: str = "id") -> str:
    """Return ``value`` if it is a valid resource id, else raise :class:`InvalidInput`."""
    if not value:
        raise InvalidInput(field, "length", f"{field} must be {ID_RULE} (got an empty string)")
    if len(value) > ID_MAX:
        raise InvalidInput(
            field, "length", f"{field} must be {ID_RULE} (got {len(value)} characters)"
        )
    bad = _FORBIDDEN_IN_ID.search(value)
    if bad is not None:
        raise InvalidInput(
            field,
            "printable",
            f"{field} must be {ID_RULE} (found U+{ord(bad.group()):04X} at {bad.start()})",
        )
    return value


def validate_feature(value: str, field: str = "feature") -> str:
    return validate_slug(value, field)


@dataclass(frozen=True, slots=True, order=True)
class Resource:
    """A thing that features attach to: ``Resource("pipeline", "db8e9a0d-...")``.

    Construction does not validate, so stores can build them cheaply from rows;
    :meth:`of` validates and is what every driving adapter uses.
    """

    type: str
    id: str

    @classmethod
    def of(cls, type: str, id: str, field: str = "resource") -> Resource:
        validate_slug(type, f"{field}.type")
        validate_id(id, f"{field}.id")
        return cls(type, id)

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"


ChangeOp = Literal["add", "remove"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change that took effect, numbered by a store-wide, strictly increasing revision."""

    revision: int
    op: ChangeOp
    resource: Resource
    feature: str
    at: datetime
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What an add or remove did: whether anything changed, and the store's revision after it."""

    changed: bool
    revision: int


@dataclass(frozen=True, slots=True)
class ResourcePage:
    """One page of ``resources_with``: the resources, and the cursor after the last one."""

    resources: list[Resource]
    has_next_page: bool
    end_cursor: str | None


# -- snapshots and feed -------------------------------------------------------------------


class Assignment(NamedTuple):
    """One (type, id, feature) a store holds. Ordered by type, id, feature, comparing
    strings by code point: the order of snapshot pages. A tuple, so a million of them
    are cheap to build, and it hashes as the plain (type, id, feature) tuple."""

    type: str
    id: str
    feature: str

    @property
    def resource(self) -> Resource:
        return Resource(self.type, self.id)


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """A page of a snapshot: assignments in order, and the revision the page reflects.

    Every change up to ``revision`` is in the page; changes after it may or may not
    be. A replica that keeps the ``revision`` of its *first* page, reads every page,
    then applies every change after that revision converges to the store's state:
    each change sets or unsets one key, and the last change of a key wins.
    """

    revision: int
    assignments: list[Assignment]
