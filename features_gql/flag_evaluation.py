"""OpenFeature's view of the domain, shared by the OFREP endpoints and the in-process provider.

OpenFeature asks "what is flag *key* for this evaluation context?". Here a flag is a
feature, the context's ``targetingKey`` is the resource id and its ``resourceType``
attribute the resource type (or a configured default), and the value is whether the
resource has the feature: ``TARGETING_MATCH`` when it does, ``DEFAULT`` when it does not.

This module knows no HTTP and no OpenFeature SDK, so both ways in answer alike.

**The catalog seam.** Whether a feature *exists* is the catalog's business
(``defineFeature``, ``archiveFeature``). :class:`FlagCatalog` is how evaluation asks it:
with ``[catalog] strict``, a key the catalog does not define (never defined, or
archived) is ``FLAG_NOT_FOUND`` (HTTP 404 over OFREP); strict or not, a bulk evaluation
answers every defined feature besides those the resource has. Its methods are
synchronous because the in-process provider answers synchronously: the catalog lives in
the store, so evaluation reads an in-memory view kept current from the change log
(:class:`~features_gql.catalog_view.CatalogView`). A view that could not load yet raises
:class:`CatalogUnavailable` rather than guess; :data:`NO_CATALOG` serves a store without
a catalog, where every well-formed name is a feature that resources may or may not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from features_gql.domain import SLUG_RULE, Resource, validate_id, validate_slug
from features_gql.errors import InvalidInput

TARGETING_KEY: Final = "targetingKey"
RESOURCE_TYPE: Final = "resourceType"

TARGETING_MATCH: Final = "TARGETING_MATCH"
DEFAULT: Final = "DEFAULT"
#: Variants name the two values of a boolean flag, as OpenFeature tooling shows them.
ON: Final = "on"
OFF: Final = "off"

ContextErrorCode = Literal["TARGETING_KEY_MISSING", "INVALID_CONTEXT"]


class ContextError(ValueError):
    """The evaluation context does not name a resource; ``code`` is OpenFeature's."""

    def __init__(self, code: ContextErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ContextErrorCode = code
        self.message = message


class CatalogUnavailable(Exception):
    """The catalog's view has not loaded (the store could not be read): whether a feature
    is defined cannot be told yet. Transient; asking again later is safe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FlagNotFound(LookupError):
    """No feature answers to this key: not a feature name, or unknown to a strict catalog."""

    code: Final = "FLAG_NOT_FOUND"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A successful evaluation of one flag, in OpenFeature's terms."""

    key: str
    value: bool
    reason: str
    variant: str

    def as_ofrep(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": self.value,
            "reason": self.reason,
            "variant": self.variant,
        }


def evaluation(key: str, has: bool) -> Evaluation:
    """What having (or not having) the feature ``key`` means to OpenFeature."""
    if has:
        return Evaluation(key, True, TARGETING_MATCH, ON)
    return Evaluation(key, False, DEFAULT, OFF)


class FlagCatalog(Protocol):
    """What flag evaluation needs from a catalog of feature definitions (see the module)."""

    def is_unknown(self, feature: str) -> bool:
        """True when the catalog is strict and does not define ``feature``; raises
        :class:`CatalogUnavailable` when a strict catalog cannot tell yet."""
        ...

    def defined(self) -> Iterable[str]:
        """Every defined feature: a bulk evaluation answers each of them. Raises
        :class:`CatalogUnavailable` when a strict catalog has not loaded (a non-strict
        one answers what it knows, possibly nothing)."""
        ...


class NoCatalog:
    """No definitions: every well-formed name is a feature, and none is listed."""

    def is_unknown(self, feature: str) -> bool:
        return False

    def defined(self) -> Iterable[str]:
        return ()


NO_CATALOG: Final = NoCatalog()


def check_flag_key(key: str, catalog: FlagCatalog = NO_CATALOG) -> str:
    """``key`` if it names a feature; else :class:`FlagNotFound` saying why not."""
    try:
        validate_slug(key, "flag key")
    except InvalidInput:
        raise FlagNotFound(
            key, f"No flag {key[:80]!r}: flag keys are feature names, {SLUG_RULE}."
        ) from None
    if catalog.is_unknown(key):
        raise FlagNotFound(
            key, f"No feature named {key!r} is defined (or it is archived); the catalog is strict."
        )
    return key


def resource_of(context: object, default_type: str | None) -> Resource:
    """The resource a request's ``context`` object names (None when it had none), or
    :class:`ContextError`."""
    if context is None:
        return resource_named(None, None, default_type)
    if not isinstance(context, Mapping):
        raise ContextError("INVALID_CONTEXT", "The evaluation context must be a JSON object.")
    return resource_named(context.get(TARGETING_KEY), context.get(RESOURCE_TYPE), default_type)


def resource_named(key: object, type_: object, default_type: str | None) -> Resource:
    """The resource of a context's ``targetingKey`` and ``resourceType`` (None when
    absent), or :class:`ContextError`."""
    if key is None or key == "":
        raise ContextError(
            "TARGETING_KEY_MISSING",
            "The evaluation context needs a targetingKey: the id of the resource to evaluate.",
        )
    if not isinstance(key, str):
        raise ContextError(
            "INVALID_CONTEXT", "targetingKey must be a string: the id of the resource."
        )
    if type_ is None:
        type_ = default_type
        if type_ is None:
            raise ContextError(
                "INVALID_CONTEXT",
                "The evaluation context needs a resourceType attribute (no default resource "
                "type is configured).",
            )
    if not isinstance(type_, str):
        raise ContextError("INVALID_CONTEXT", "resourceType must be a string.")
    try:
        validate_slug(type_, RESOURCE_TYPE)
        validate_id(key, TARGETING_KEY)
    except InvalidInput as exc:
        raise ContextError("INVALID_CONTEXT", exc.message) from None
    return Resource(type_, key)
