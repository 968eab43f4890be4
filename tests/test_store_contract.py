"""Every bundled store runs the store contract suite."""

from __future__ import annotations

import subprocess
import sys
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
        # Snapshots are optional too (the contract skips them for a store without).
        assert store.snapshot_page is not Store.snapshot_page, store.__name__
        assert store.trim_changes is not Store.trim_changes, store.__name__


INCLUSIVE_AFTER = '''
import pytest
from features_gql.testing import StoreContract
from features_gql_plugins.memory_store import MemoryStore


class InclusiveAfterStore(MemoryStore):
    """Treats `after` as inclusive: a cursor that never moves past its own page end."""

    async def resources_with(self, feature, *, type, after, limit):
        everything = await super().resources_with(feature, type=type, after=None, limit=10**6)
        return [r for r in everything if after is None or r >= after][:limit]


class TestInclusiveAfterStore(StoreContract):
    persistent = False

    @pytest.fixture
    def make_store(self):
        return InclusiveAfterStore
'''


def test_the_contract_fails_a_wrong_cursor_with_the_values_instead_of_hanging(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_inclusive_after.py").write_text(INCLUSIVE_AFTER)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "pages"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout
    # Rewritten by pytest: the failing comparison is shown with its values.
    assert "assert Resource(type='app', id='app-006') > Resource(type='app', id='app-006')" in (
        result.stdout
    ), result.stdout
