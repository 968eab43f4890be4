"""The HTTP driving adapter: aiohttp serving GraphQL, health and request ids."""

from features_gql.http.app import create_app, mount_graphql

__all__ = ["create_app", "mount_graphql"]
