"""Every bundled store runs the store contract suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from features_gql.stores import Store
from features_gql.testing import StoreContract
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.sqlite_store import SQLiteStore


class TestMemoryStore(StoreContract):
    persistent = False

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        return MemoryStore


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: SQLiteStore(str(tmp_path / "features.db"))


class TestSQLiteStoreFullSync(StoreContract):
    """The power-loss-safe setting must be just as correct."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: SQLiteStore(str(tmp_path / "nested" / "dir" / "f.db"), synchronous="full")


def test_every_bundled_store_implements_the_catalog() -> None:
    """The catalog is optional for third-party stores, not for the bundled ones (their
    contract tests would otherwise skip its scenarios)."""
    from features_gql_plugins.mongodb_store import MongoDBStore
    from features_gql_plugins.postgres_store import PostgresStore

    for store in (MemoryStore, SQLiteStore, MongoDBStore, PostgresStore):
        assert store.supports_catalog is True, store.__name__
