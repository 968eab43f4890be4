"""Custom scalars of the schema."""

from __future__ import annotations

from typing import NewType

import strawberry
from graphql import GraphQLError
from strawberry.types.scalar import ScalarDefinition

from features_gql.domain import MAX_REVISION

#: A revision of the change log, in a resolver's signature: an ``int`` checked against the
#: range of :data:`REVISION` at the schema's boundary.
Revision = NewType("Revision", int)
#: The revision before the first change.
NO_REVISION = Revision(0)

_RULE = f"a whole number from 0 to {MAX_REVISION} (2^53 - 1), as a JSON number"


def _revision(value: object) -> Revision:
    # GraphQL's Int is 32-bit: revisions outgrow it, and a string or a float that looks
    # like one is a client's bug to report, not a value to guess at. A GraphQLError, not
    # a ValueError: graphql-core keeps a ValueError as the cause, which masks it as an
    # internal error.
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphQLError(f"a Revision is {_RULE} (got {type(value).__name__})")
    if not 0 <= value <= MAX_REVISION:
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:37]}..."
        raise GraphQLError(f"a Revision is {_RULE} (got {shown})")
    return Revision(value)


REVISION: ScalarDefinition = strawberry.scalar(
    name="Revision",
    description=(
        "A revision of the change log: store-wide, strictly increasing, from 0 (no change "
        f"yet) to {MAX_REVISION} (2^53 - 1, the largest integer a JSON number carries "
        "exactly). Carried as a JSON number; GraphQL's Int (32-bit) cannot hold it past "
        "2^31 - 1. Variables of revision arguments are declared `$after: Revision`; "
        "strings, floats and booleans are refused."
    ),
    serialize=_revision,
    parse_value=_revision,
)

#: For ``StrawberryConfig(scalar_map=...)``.
SCALARS: dict[object, ScalarDefinition] = {Revision: REVISION}
