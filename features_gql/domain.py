"""The domain: resources, feature names, change events, and the rules that names follow."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal, NamedTuple, cast

from features_gql.errors import InvalidInput

SLUG_MAX = 64
ID_MAX = 256

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Control characters (C0, DEL, C1), lone surrogates and the Unicode line/paragraph
# separators: anything that would break a log line or a terminal.
_FORBIDDEN_IN_ID = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

_SLUG_MATCH = _SLUG.fullmatch
_FORBIDDEN_SEARCH = _FORBIDDEN_IN_ID.search
SLUG_RULE = (
    "a lowercase slug: 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
)
ID_RULE = "1-256 characters with no control characters"


def validate_slug(value: str, field: str) -> str:
    """Return ``value`` if it is a slug, else raise :class:`InvalidInput` naming ``field``."""
    if _SLUG_MATCH(value) is None:
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
    if _SLUG_MATCH(value) is None:
        validate_slug(value, field)
    return value


class Resource(NamedTuple):
    """A thing that features attach to: ``Resource("pipeline", "db8e9a0d-...")``.

    Construction does not validate, so stores can build them cheaply from rows;
    :meth:`of` validates and is what every driving adapter uses.

    A named tuple rather than a dataclass because flag checks build thousands per
    request: a tuple is built, hashed and compared in C (a frozen dataclass costs about
    three times as much to build). It orders, hashes and compares as the pair
    ``(type, id)``.
    """

    type: str
    id: str

    @classmethod
    def of(cls, type: str, id: str, field: str = "resource") -> Resource:
        # The rules tested inline, and the field names (f-strings) built only to report a
        # broken one: every flag check comes through here.
        if _SLUG_MATCH(type) is None:
            validate_slug(type, f"{field}.type")
        if not 0 < len(id) <= ID_MAX or _FORBIDDEN_SEARCH(id) is not None:
            validate_id(id, f"{field}.id")
        return tuple.__new__(cls, (type, id))

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"


#: ``Resource`` from a ``(type, id)`` pair of strings, built in C: no argument
#: checking, so only for pairs already known to be two strings.
resource_of_pair = cast("Callable[[tuple[str, str]], Resource]", partial(tuple.__new__, Resource))


def all_ids_valid(ids: Sequence[str]) -> bool:
    """Whether every id follows the id rule, checked for the batch at once (a few C passes
    rather than a regular expression per id); :func:`validate_id` says which breaks it."""
    if not ids:
        return True
    lengths = list(map(len, ids))
    # A space may be in an id, so joining on it can neither hide nor invent a forbidden
    # character.
    return (
        min(lengths) > 0
        and max(lengths) <= ID_MAX
        and _FORBIDDEN_IN_ID.search(" ".join(ids)) is None
    )


#: The largest revision: the largest integer a JSON number carries exactly (2^53 - 1), as
#: JavaScript and most JSON parsers read numbers as doubles. A store that reached it would
#: have taken a million changes a second for 285 years.
MAX_REVISION = 2**53 - 1

#: What a change did: ``add`` and ``remove`` change an assignment; ``define`` and
#: ``archive`` change the catalog (the feature's definition), and have no resource.
ChangeOp = Literal["add", "remove", "define", "archive"]
#: The changes that set or unset one assignment, the only ones a replica applies.
AssignmentOp = Literal["add", "remove"]
ASSIGNMENT_OPS: frozenset[str] = frozenset({"add", "remove"})


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change that took effect, numbered by a store-wide, strictly increasing revision.

    ``resource`` is None for catalog changes (``define``, ``archive``): a consumer that
    mirrors assignments applies ``add`` and ``remove`` and skips every other ``op``.
    """

    revision: int
    op: ChangeOp
    resource: Resource | None
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


# -- catalog, listings, history and bulk -------------------------------------------------

FeatureKind = Literal["release", "ops", "experiment", "permission"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("release", "ops", "experiment", "permission")
DESCRIPTION_MAX = 2000
OWNER_MAX = 200
SEARCH_MAX = 100

# Descriptions may span lines; nothing else that would break a log line or a terminal.
_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


#: The times an expiry may take, in UTC: what every store and every client can represent
#: (BSON's and JavaScript's milliseconds since 1970, PostgreSQL, Python's years 1-9999,
#: whatever the offset a client writes them with).
EXPIRY_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
EXPIRY_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def validate_expiry(value: datetime, field: str = "expiresAt") -> datetime:
    """``value`` in UTC and to the millisecond (what every store keeps: MongoDB no finer).
    Refused without a time zone, or outside :data:`EXPIRY_EARLIEST` to
    :data:`EXPIRY_LATEST` (an offset can carry a time past either end)."""
    if value.utcoffset() is None:
        raise InvalidInput(
            field, "timezone", f"{field} must say its time zone (e.g. 2030-01-31T00:00:00Z)"
        )
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EXPIRY_EARLIEST <= utc <= EXPIRY_LATEST:
        raise InvalidInput(
            field,
            "range",
            f"{field} must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z",
        )
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def validate_text(value: str, field: str, maximum: int, *, multiline: bool = False) -> str:
    """Free text (a description, an owner): at most ``maximum`` characters, printable."""
    if len(value) > maximum:
        raise InvalidInput(
            field, "length", f"{field} may hold at most {maximum} characters (got {len(value)})"
        )
    bad = (_FORBIDDEN_IN_TEXT if multiline else _FORBIDDEN_IN_ID).search(value)
    if bad is not None:
        raise InvalidInput(
            field,
            "printable",
            f"{field} may not hold control characters (found U+{ord(bad.group()):04X} at "
            f"{bad.start()})",
        )
    return value


class Keep(enum.Enum):
    """A definition field that a :class:`FeatureSpec` leaves as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class FeatureDefinition:
    """What the catalog says about a feature, beyond its name."""

    created_at: datetime
    updated_at: datetime
    description: str | None = None
    owner: str | None = None
    kind: FeatureKind | None = None
    expires_at: datetime | None = None
    #: When it was retired; None while it is live.
    archived_at: datetime | None = None

    def same_fields(self, other: FeatureDefinition) -> bool:
        """Whether both say the same (times of creation and update aside)."""
        return (
            self.description,
            self.owner,
            self.kind,
            self.expires_at,
            self.archived_at,
        ) == (other.description, other.owner, other.kind, other.expires_at, other.archived_at)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A ``defineFeature``: the name, and the fields it sets.

    A field left as :data:`KEEP` keeps its value (None for a new definition); a field
    given as None clears it. Defining an archived feature brings it back.
    """

    name: str
    description: str | Keep | None = KEEP
    owner: str | Keep | None = KEEP
    kind: FeatureKind | Keep | None = KEEP
    expires_at: datetime | Keep | None = KEEP

    def apply(self, current: FeatureDefinition | None, now: datetime) -> FeatureDefinition | None:
        """The definition after this spec, or None when it would change nothing."""
        base = current or FeatureDefinition(created_at=now, updated_at=now)
        wanted = FeatureDefinition(
            created_at=base.created_at,
            updated_at=now,
            description=base.description if self.description is KEEP else self.description,
            owner=base.owner if self.owner is KEEP else self.owner,
            kind=base.kind if self.kind is KEEP else self.kind,
            expires_at=base.expires_at if self.expires_at is KEEP else self.expires_at,
            archived_at=None,
        )
        if current is not None and current.same_fields(wanted):
            return None
        return wanted


def retire(current: FeatureDefinition | None, now: datetime) -> FeatureDefinition | None:
    """The definition after archiving it at ``now``, or None when that changes nothing
    (no definition, or already archived): the one rule every store's ``archive`` follows,
    as :meth:`FeatureSpec.apply` is for ``define``."""
    if current is None or current.archived_at is not None:
        return None
    return FeatureDefinition(
        created_at=current.created_at,
        updated_at=now,
        description=current.description,
        owner=current.owner,
        kind=current.kind,
        expires_at=current.expires_at,
        archived_at=now,
    )


@dataclass(frozen=True, slots=True)
class DefinitionChange:
    """A write of a feature's definition, as every store applies it.

    ``change(current, now)`` is the definition to store, or None when the write changes
    nothing (then nothing is logged): ``define`` applies a spec (:meth:`FeatureSpec.apply`),
    ``archive`` retires (:func:`retire`). A change that takes effect is logged as ``op``.
    """

    op: Literal["define", "archive"]
    name: str
    change: Callable[[FeatureDefinition | None, datetime], FeatureDefinition | None]

    @classmethod
    def define(cls, spec: FeatureSpec) -> DefinitionChange:
        return cls("define", spec.name, spec.apply)

    @classmethod
    def archive(cls, name: str) -> DefinitionChange:
        return cls("archive", name, retire)


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """A feature as the catalog knows it: how many resources have it, and its definition
    (None for a feature that is assigned but was never defined)."""

    name: str
    resource_count: int = 0
    definition: FeatureDefinition | None = None

    @property
    def defined(self) -> bool:
        return self.definition is not None

    @property
    def archived(self) -> bool:
        return self.definition is not None and self.definition.archived_at is not None

    @property
    def live(self) -> bool:
        """Defined and not archived: what strict mode lets a request assign."""
        return self.definition is not None and self.definition.archived_at is None

    def expired(self, now: datetime) -> bool:
        expires = None if self.definition is None else self.definition.expires_at
        return expires is not None and expires <= now


@dataclass(frozen=True, slots=True)
class DefinitionResult:
    """What a define or archive did, the store's revision after it, and the feature now."""

    changed: bool
    revision: int
    feature: FeatureInfo


@dataclass(frozen=True, slots=True)
class FeatureFilter:
    """Which features a listing keeps. None means either way."""

    #: The time ``expired`` is judged at.
    now: datetime
    kind: FeatureKind | None = None
    #: Lowercase text the name or the description must contain.
    search: str | None = None
    expired: bool | None = None
    archived: bool | None = None
    defined: bool | None = None

    def keeps(self, feature: FeatureInfo) -> bool:
        """The reference answer every store's listing must agree with."""
        definition = feature.definition
        if self.kind is not None and (definition is None or definition.kind != self.kind):
            return False
        if self.expired is not None and feature.expired(self.now) != self.expired:
            return False
        if self.archived is not None and feature.archived != self.archived:
            return False
        if self.defined is not None and feature.defined != self.defined:
            return False
        if self.search is not None:
            description = (definition.description or "") if definition else ""
            if self.search not in feature.name and self.search not in description.lower():
                return False
        return True


@dataclass(frozen=True, slots=True)
class ResourceTypeCount:
    """A resource type in use, and how many resources of it have at least one feature."""

    name: str
    resource_count: int


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which changes a history keeps: all of them, or those of a resource, a feature (its
    assignments and its definition), an actor, or any combination."""

    resource: Resource | None = None
    feature: str | None = None
    actor: str | None = None

    def keeps(self, change: ChangeEvent) -> bool:
        return (
            (self.resource is None or change.resource == self.resource)
            and (self.feature is None or change.feature == self.feature)
            and (self.actor is None or change.actor == self.actor)
        )


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What an ``add_many`` or ``remove_many`` did.

    ``revisions[i]`` is the revision under which item ``i`` changed, or None when it
    changed nothing (or repeats an earlier item). ``revision`` is the store's revision
    after the call. A non-empty ``refused`` lists the features strict mode refused (not
    defined, or archived): then nothing was applied.
    """

    revisions: list[int | None]
    revision: int
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SetResult:
    """What a ``set_features`` did: the features taken away, then those given, each change
    under its own revision in that order; ``refused`` as for :class:`BulkResult`."""

    removed: list[str]
    added: list[str]
    revision: int
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FeaturePage:
    """One page of the catalog listing, and the cursor after its last feature."""

    features: list[FeatureInfo]
    has_next_page: bool
    end_cursor: str | None


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of a history, newest first, and the cursor after its oldest change."""

    changes: list[ChangeEvent]
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
