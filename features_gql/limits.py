"""The bounds on one GraphQL request: plain data, read by the settings (``[limits]``)
and enforced by :mod:`features_gql.graphql.admission`, which the settings do not import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on one request. Each has a setting under ``[limits]``."""

    #: Lexical tokens in a query; parsing stops at this many. Parsing costs about 10 µs
    #: a token, so this bounds the time a query can take before it is refused.
    max_tokens: int = 10_000
    #: Selections (fields, aliases, fragment spreads) in one selection set. Validation
    #: compares same-named selections pairwise, so this bounds its quadratic part.
    max_selections: int = 100
    #: Nesting of fields, introspection included.
    max_depth: int = 12
    #: Store items one request may ask for, summed over all fields and aliases.
    max_cost: int = 20_000
    #: Parsed queries kept, by count and by estimated bytes.
    cache_entries: int = 512
    cache_bytes: int = 64 * 1024 * 1024
