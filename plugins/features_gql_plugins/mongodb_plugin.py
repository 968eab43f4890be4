"""Registers the ``mongodb`` store.

The store itself lives in ``mongodb_store``, imported only when a MongoDB store is
built: PyMongo is a large import, and processes on another store should not pay for it
in start-up time, memory and garbage-collection work.
"""

from __future__ import annotations

from features_gql import hookimpl
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    from features_gql_plugins.mongodb_store import build_store

    return build_store(options, builder)


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "mongodb",
        _factory,
        description="MongoDB (PyMongo async or Motor): many API instances, one database.",
        url_schemes=("mongodb",),
    )
