"""Test support for plugin authors: the store contract suite (and, for a store over a
database server, its outage-and-recovery section, ``NetworkStoreContract``).

    from features_gql.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "data")

Needs the ``testing`` extra (pytest and hypothesis): ``pip install -e ".[testing]"`` in a
checkout of features-gql.
"""

import pytest

# The contract's assertions are the definition of a correct store: when one fails, the
# plugin author should see pytest's account of the values compared, not a bare
# AssertionError. Rewriting must be registered before the module is imported.
pytest.register_assert_rewrite("features_gql.testing.store_contract")

from features_gql.testing.store_contract import (  # noqa: E402
    NetworkStoreContract,
    OutageServer,
    StoreContract,
    run_with_store,
)

__all__ = ["NetworkStoreContract", "OutageServer", "StoreContract", "run_with_store"]
