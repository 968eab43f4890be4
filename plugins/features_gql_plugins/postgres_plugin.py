"""Registers the ``postgres`` store.

The store itself lives in ``postgres_store``, imported only when a PostgreSQL store is
built: processes on another store need not have asyncpg installed (it comes with
``pip install "features-gql[postgres]"``), nor pay for importing it.
"""

from __future__ import annotations

import importlib.util

from features_gql import hookimpl
from features_gql.errors import ConfigError
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry


def _factory(options: StoreOptions, builder: StoreBuilder) -> Store:
    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError(
            f"{options.where}: the postgres store needs the asyncpg package: "
            "pip install 'features-gql[postgres]'"
        )
    from features_gql_plugins.postgres_store import build_store

    return build_store(options, builder)


@hookimpl
def features_gql_register_stores(registry: StoreRegistry) -> None:
    registry.add(
        "postgres",
        _factory,
        description="PostgreSQL (asyncpg): tables in a schema of the application's database.",
        url_schemes=("postgresql", "postgres"),
    )
