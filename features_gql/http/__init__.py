"""The HTTP driving adapter: aiohttp serving GraphQL, OFREP, health and request ids."""

from features_gql.http.app import create_app, mount_graphql
from features_gql.http.ofrep import mount_ofrep

__all__ = ["create_app", "mount_graphql", "mount_ofrep"]
