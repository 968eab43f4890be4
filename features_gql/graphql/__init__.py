"""The GraphQL driving adapter: a Strawberry schema over FeaturesAPI."""

from features_gql.graphql.context import Context
from features_gql.graphql.schema import build_schema, schema_sdl

__all__ = ["Context", "build_schema", "schema_sdl"]
