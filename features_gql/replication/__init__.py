"""Replication: what copies of a features-gql service (edges) take from their upstream.

:mod:`features_gql.replication.wire` parses the upstream's answers into domain values,
refusing anything it cannot take for what it claims to be.
"""
