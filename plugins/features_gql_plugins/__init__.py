"""The plugins bundled with features-gql, installed as ``features_gql_plugins``.

Each module is registered through the ``features_gql`` entry-point group, exactly as a
third-party plugin would be.
"""
